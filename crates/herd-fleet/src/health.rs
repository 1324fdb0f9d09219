//! Active health checks: the rise/fall state machine (pure) and the probes (TCP or HTTP GET).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// HAProxy-style rise/fall counters. Starts down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    up: bool,
    ok_streak: u32,
    fail_streak: u32,
}

impl HealthState {
    #[must_use]
    pub fn new(rise: u32, fall: u32) -> Self {
        HealthState {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            ok_streak: 0,
            fail_streak: 0,
        }
    }

    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// True while down or while a streak is heading towards a change: probe at `fastinter`.
    #[must_use]
    pub fn transitioning(&self) -> bool {
        !self.up || self.fail_streak > 0
    }

    /// Feeds one probe result; returns the new state when it flips.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            if !self.up && self.ok_streak >= self.rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
            if self.up && self.fail_streak >= self.fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

/// One probe: a TCP connect, or an HTTP/1.1 GET of `path` expecting 2xx/3xx, within `timeout`.
pub async fn probe(addr: SocketAddr, path: Option<&str>, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, probe_inner(addr, path))
        .await
        .unwrap_or(false)
}

async fn probe_inner(addr: SocketAddr, path: Option<&str>) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Some(path) = path else { return true };
    let Ok((mut send, conn)) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    // The connection future is driven inline with the request: no task outlives the probe.
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONNECTION, "close")
        .header(http::header::USER_AGENT, "herd-health-check")
        .body(Empty::new());
    let Ok(req) = req else { return false };
    let exchange = async {
        let resp = send.send_request(req).await.ok()?;
        Some(resp.status())
    };
    tokio::pin!(conn);
    tokio::pin!(exchange);
    // With `Connection: close` the driver may finish in the same poll that delivers the
    // response; the response then still waits in the exchange, so read it rather than race.
    let status = tokio::select! {
        biased;
        status = &mut exchange => status,
        _ = &mut conn => exchange.await,
    };
    status.is_some_and(|s| s.is_success() || s.is_redirection())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rises_after_rise_passes_and_falls_after_fall_failures() {
        let mut h = HealthState::new(2, 3);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
    }

    proptest! {
        /// Model: the state is up iff the last run of equal results that caused a flip says so.
        #[test]
        fn flips_only_after_full_streaks(results in proptest::collection::vec(any::<bool>(), 0..200),
                                         rise in 1u32..5, fall in 1u32..5) {
            let mut h = HealthState::new(rise, fall);
            let mut up = false;
            let mut streak = 0u32;
            let mut last: Option<bool> = None;
            for r in results {
                streak = if last == Some(r) { streak + 1 } else { 1 };
                last = Some(r);
                let flip = h.observe(r);
                let expect = if r && !up && streak >= rise { up = true; Some(true) }
                    else if !r && up && streak >= fall { up = false; Some(false) }
                    else { None };
                prop_assert_eq!(flip, expect);
                prop_assert_eq!(h.is_up(), up);
            }
        }
    }

    #[tokio::test]
    async fn tcp_probe_sees_listener_and_absence() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(probe(addr, None, Duration::from_secs(1)).await);
        drop(l);
        assert!(!probe(addr, None, Duration::from_secs(1)).await);
    }
}

#[cfg(test)]
mod http_probe_tests {
    use super::*;

    #[tokio::test]
    async fn http_probe_against_a_tiny_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            }
        });
        assert!(probe(addr, Some("/health"), Duration::from_secs(1)).await);
    }
}
