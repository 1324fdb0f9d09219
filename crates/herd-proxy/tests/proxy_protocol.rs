//! `[gateway] proxy_protocol = true` over real sockets: the client address of a v1 or v2
//! header is the one backends see in `X-Forwarded-For` and the one `max_conn_per_ip` counts;
//! a connection without a header, or with a broken one, is closed unanswered.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::gateway;

/// A gateway with `proxy_protocol = true` (and `extra`) in front of a backend answering each
/// request with the `X-Forwarded-For` it received.
async fn pp_gateway(extra: &str) -> common::Running {
    let backend = common::header_backend("x-forwarded-for").await;
    gateway(&format!("proxy_protocol = true\n{extra}"), backend).await
}

/// Sends `preamble` then one request; returns the whole answer ("" when closed unanswered).
async fn exchange(addr: SocketAddr, preamble: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

fn v2(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(ip);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(80u16.to_be_bytes());
    h
}

#[tokio::test]
async fn the_header_names_the_client() {
    let gw = pp_gateway("").await;
    let got = exchange(gw.addr, b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 80\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("\r\n\r\n192.0.2.7"), "{got}");

    let got = exchange(gw.addr, b"PROXY TCP6 2001:db8::7 ::1 51234 80\r\n").await;
    assert!(got.ends_with("\r\n\r\n2001:db8::7"), "{got}");

    let got = exchange(gw.addr, &v2([198, 51, 100, 9], 40000)).await;
    assert!(got.ends_with("\r\n\r\n198.51.100.9"), "{got}");

    // The balancer's own health check (UNKNOWN) keeps the connection's address.
    let got = exchange(gw.addr, b"PROXY UNKNOWN\r\n").await;
    assert!(got.ends_with("\r\n\r\n127.0.0.1"), "{got}");
    gw.stop.cancel();
}

#[tokio::test]
async fn a_header_split_across_segments_is_waited_for() {
    let gw = pp_gateway("").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"7 127.0.0.1 51234 80\r").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&out);
    assert!(got.ends_with("\r\n\r\n192.0.2.7"), "{got}");
    gw.stop.cancel();
}

#[tokio::test]
async fn connections_without_a_valid_header_are_closed_unanswered() {
    let gw = pp_gateway("client_header_timeout = \"500ms\"").await;
    assert_eq!(exchange(gw.addr, b"").await, "", "no header");
    assert_eq!(
        exchange(gw.addr, b"PROXY TCP4 999.1.1.1 127.0.0.1 1 80\r\n").await,
        "",
        "a broken header"
    );
    // Silent after connecting: closed after client_header_timeout.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("a silent connection was kept past client_header_timeout")
        .unwrap();
    assert!(out.is_empty());
    gw.stop.cancel();
}

#[tokio::test]
async fn only_the_listed_balancers_may_connect() {
    let elsewhere = pp_gateway("proxy_protocol_from = [\"192.0.2.0/24\"]").await;
    let header = b"PROXY TCP4 198.51.100.9 127.0.0.1 1000 80\r\n";
    assert_eq!(
        exchange(elsewhere.addr, header).await,
        "",
        "127.0.0.1 is not a balancer"
    );
    elsewhere.stop.cancel();
    let local = pp_gateway("proxy_protocol_from = [\"127.0.0.0/8\", \"::1\"]").await;
    let got = exchange(local.addr, header).await;
    assert!(got.ends_with("\r\n\r\n198.51.100.9"), "{got}");
    local.stop.cancel();
}

#[tokio::test]
async fn max_conn_per_ip_counts_the_address_from_the_header() {
    let gw = pp_gateway("max_conn_per_ip = 1").await;
    // Two clients behind the same balancer connection address: each has its own count.
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let other = exchange(gw.addr, b"PROXY TCP4 192.0.2.2 127.0.0.1 1000 80\r\n").await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    // The first client's second connection (still open: the first) is over its limit.
    let same = exchange(gw.addr, b"PROXY TCP4 192.0.2.1 127.0.0.1 1001 80\r\n").await;
    assert!(same.starts_with("HTTP/1.1 503"), "{same}");
    drop(first);
    gw.stop.cancel();
}

#[tokio::test]
async fn a_shutdown_does_not_wait_for_a_silent_balancer() {
    // The header timeout (client_header_timeout) is 30 s and the shutdown timeout 20 s: a
    // shutdown that waited for the header read would take 20 s.
    let gw = pp_gateway("client_header_timeout = \"30s\"\nshutdown_timeout = \"20s\"").await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.served)
        .await
        .expect("the shutdown ends without waiting for the PROXY header")
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{out:?}");
}
