//! The PROXY protocol on the gateway's listener (`[gateway] proxy_protocol = true`; HAProxy's
//! `accept-proxy`, nginx's `listen ... proxy_protocol`): herd behind a layer-4 load balancer
//! (AWS NLB, HAProxy in TCP mode) learns each client's address from the header the balancer
//! sends first, version 1 (text) or 2 (binary). That address is then the client's everywhere:
//! `X-Forwarded-For`, rate limits and `max_conn_per_ip`, `ip_hash`, the access log.
//!
//! When enabled, every connection must start with a header, complete within
//! `client_header_timeout`; one that does not is closed. With `proxy_protocol_from` (nginx's
//! `set_real_ip_from`) only the balancers listed may connect; without it the header is trusted
//! from whoever connects, as HAProxy's `accept-proxy` does, and the listener must be reachable
//! from the balancer only (firewall, security group), or any client could name any address. A `LOCAL`
//! header (the balancer's own health check) or an `UNKNOWN` / unspecified one keeps the
//! connection's own address, as the protocol says.
//!
//! Only header bytes are ever consumed: what is peeked is parsed, and when the header is not
//! complete yet, the bytes seen so far (all of them header) are read and the next peek waits
//! for more, so a slow sender costs a wake-up per segment, not a poll loop.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{v1, v2, HeaderResult, PartialResult as _};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// Whether `peer` may connect: it is in `balancers`, or the list is empty (any peer).
pub(crate) fn allowed(balancers: &[ipnet::IpNet], peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    balancers.is_empty() || balancers.iter().any(|n| n.contains(&ip))
}

/// The longest header accepted (v1 is at most 107 bytes; v2 with its TLVs rarely passes 300).
const MAX_HEADER: usize = 4096;

/// Reads the header at the start of `stream` (exactly its bytes: what follows is the client's
/// HTTP or TLS) and returns the client address it names.
pub(crate) async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    tokio::time::timeout(timeout, read(stream, peer))
        .await
        .map_err(|_| format!("no complete PROXY protocol header within {timeout:?}"))?
}

async fn read(stream: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, String> {
    // `buf[..head]`: header bytes already read; what is peeked lands after them.
    let mut buf = vec![0u8; MAX_HEADER];
    let mut head = 0;
    loop {
        let n = stream
            .peek(&mut buf[head..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before sending a whole PROXY protocol header".to_owned());
        }
        let seen = head + n;
        match parse(&buf[..seen], peer)? {
            Some((len, addr)) => {
                stream
                    .read_exact(&mut buf[head..len])
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(addr);
            }
            None if seen == buf.len() => {
                return Err(format!(
                    "PROXY protocol header longer than {MAX_HEADER} bytes"
                ));
            }
            None => {
                // Incomplete: every byte seen is header. Take them, so that the next peek
                // waits for the rest.
                stream
                    .read_exact(&mut buf[head..seen])
                    .await
                    .map_err(|e| e.to_string())?;
                head = seen;
            }
        }
    }
}

/// `Ok(None)`: incomplete. `Ok(Some((header length, client address)))`.
fn parse(bytes: &[u8], peer: SocketAddr) -> Result<Option<(usize, SocketAddr)>, String> {
    let header = HeaderResult::parse(bytes);
    if header.is_incomplete() {
        return Ok(None);
    }
    let found = match header {
        HeaderResult::V1(Ok(h)) => {
            let addr = match h.addresses {
                v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
                v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
                v1::Addresses::Unknown => peer,
            };
            (h.header.len(), addr)
        }
        HeaderResult::V2(Ok(h)) => {
            let addr = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    SocketAddr::from((a.source_address, a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    SocketAddr::from((a.source_address, a.source_port))
                }
                _ => peer,
            };
            (h.len(), addr)
        }
        HeaderResult::V1(Err(e)) => return Err(format!("bad PROXY protocol header: {e}")),
        HeaderResult::V2(Err(e)) => return Err(format!("bad PROXY protocol header: {e}")),
    };
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.0.0.1:4000".parse().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\nGET / HTTP/1.1\r\n";
        let (len, addr) = parse(h, peer()).unwrap().unwrap();
        assert_eq!(
            &h[len..],
            b"GET / HTTP/1.1\r\n",
            "only the header is consumed"
        );
        assert_eq!(addr, "192.0.2.7:51234".parse().unwrap());

        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n";
        let (_, addr) = parse(h, peer()).unwrap().unwrap();
        assert_eq!(addr, "[2001:db8::7]:51234".parse().unwrap());

        let (len, addr) = parse(b"PROXY UNKNOWN\r\n", peer()).unwrap().unwrap();
        assert_eq!((len, addr), (15, peer()));
    }

    #[test]
    fn v2_proxy_with_tlvs_and_local() {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend([0x21, 0x11, 0, 12 + 7]); // PROXY, TCP over IPv4, addresses + one TLV
        h.extend([192, 0, 2, 7, 198, 51, 100, 1]);
        h.extend(51234u16.to_be_bytes());
        h.extend(443u16.to_be_bytes());
        h.extend([0x04, 0, 4, b'n', b'o', b'o', b'p']); // a NOOP TLV
        let len_header = h.len();
        h.extend(b"\x16\x03\x01"); // a TLS ClientHello follows
        let (len, addr) = parse(&h, peer()).unwrap().unwrap();
        assert_eq!(len, len_header);
        assert_eq!(addr, "192.0.2.7:51234".parse().unwrap());

        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend([0x20, 0x00, 0, 0]); // LOCAL, unspecified
        assert_eq!(parse(&local, peer()).unwrap().unwrap(), (16, peer()));
    }

    #[test]
    fn only_listed_balancers_may_connect() {
        let nets: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert!(allowed(&nets, "10.1.2.3:5".parse().unwrap()));
        assert!(
            allowed(&nets, "[::ffff:10.1.2.3]:5".parse().unwrap()),
            "v4-mapped"
        );
        assert!(allowed(&nets, "[2001:db8::1]:5".parse().unwrap()));
        assert!(!allowed(&nets, "192.0.2.1:5".parse().unwrap()));
        assert!(
            allowed(&[], "192.0.2.1:5".parse().unwrap()),
            "no list: any peer"
        );
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_refused() {
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7", peer()).unwrap(), None);
        assert_eq!(parse(b"\r\n\r\n\0\r\nQU", peer()).unwrap(), None);
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", peer()).is_err());
        assert!(parse(b"PROXY TCP4 999.0.2.7 198.51.100.1 1 2\r\n", peer()).is_err());
    }
}
