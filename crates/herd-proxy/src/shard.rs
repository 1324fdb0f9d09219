//! Shards: the gateway's data plane runs as `[gateway] threads` shards, like nginx's worker
//! processes or HAProxy's threads. Each shard is one OS thread with its own single-threaded
//! tokio runtime and its own listening socket on the gateway's address (`SO_REUSEPORT`: the
//! kernel spreads new connections across the shards). A connection lives on the shard that
//! accepted it for its whole life: its hyper task, its backend connections (each instance's
//! keep-alive pool keeps one idle list per shard, see `pool`), its parked socket (each shard
//! has its own parking) and any tunnel it becomes. A request therefore never wakes another
//! thread, and no task is stolen between threads mid-request.
//!
//! What the shards share is what a request reads or counts: the routing tables and rotation
//! (`arc-swap`), balancer state, statistics, rate limits, `max_connections` and
//! `max_conn_per_ip` (atomics and short locks).
//!
//! [`Gateway::serve`](crate::Gateway::serve) runs one shard as a task on the caller's runtime
//! (tests, embedding); [`Gateway::serve_threads`](crate::Gateway::serve_threads) starts one
//! thread per listener from [`bind`].

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;

/// Listen backlog of each shard's socket (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

thread_local! {
    /// This thread's shard; 0 on any thread that is not a shard.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The shard the calling thread serves (0 outside a shard thread).
pub(crate) fn current() -> usize {
    SHARD.with(Cell::get)
}

/// Marks the calling thread as shard `index`.
pub(crate) fn enter(index: usize) {
    SHARD.with(|s| s.set(index));
}

/// Binds `shards` listening sockets to `addr`, one per shard. With more than one they share
/// the address through `SO_REUSEPORT` (sockets of the same user only); port 0 picks one free
/// port for all of them. Like a single socket, it fails while anything else listens on the
/// address, a herd with several threads included. Call it inside a tokio runtime; the sockets are returned detached
/// from it, for [`Gateway::serve_threads`](crate::Gateway::serve_threads).
///
/// # Errors
/// The address is in use (by another process or without `SO_REUSEPORT`), not local, or not
/// permitted; `shards` is 0.
pub fn bind(addr: SocketAddr, shards: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if shards == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the gateway needs at least one thread",
        ));
    }
    if shards > 1 && addr.port() != 0 {
        // `SO_REUSEPORT` would let a second herd (same user) join this address silently and
        // take half its connections. A plain bind first fails, as it would with one thread,
        // while anything listens there.
        drop(bind_probe(addr)?);
    }
    let first = bind_one(addr, shards > 1)?;
    // Port 0: the others join the port the first one got.
    let addr = first.local_addr()?;
    let mut out = vec![first.into_std()?];
    for _ in 1..shards {
        out.push(bind_one(addr, true)?.into_std()?);
    }
    Ok(out)
}

/// A socket bound (not listening) to `addr` without `SO_REUSEPORT`.
fn bind_probe(addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's `TcpListener::bind` does: a restarted herd rebinds past TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shards_share_one_port() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        // A process that did not ask for SO_REUSEPORT cannot take the port.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    }

    #[tokio::test]
    async fn a_second_gateway_on_the_same_address_is_refused() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        // Same process, same user: SO_REUSEPORT alone would let these join the first group.
        for shards in [1, 2] {
            let err = bind(addr, shards).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{shards} shards");
        }
        drop(first);
        // Once the first is gone the address is free again.
        assert_eq!(bind(addr, 2).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn zero_shards_is_an_error() {
        let err = bind("127.0.0.1:0".parse().unwrap(), 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn threads_know_their_shard() {
        assert_eq!(current(), 0);
        std::thread::spawn(|| {
            enter(3);
            assert_eq!(current(), 3);
        })
        .join()
        .unwrap();
        assert_eq!(current(), 0);
    }
}
