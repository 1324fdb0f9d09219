//! Active health checks: the rise/fall state machine (pure), the interval it asks for
//! (`inter`, `fastinter`, `downinter` as HAProxy), and the probes (TCP or HTTP GET with
//! `expect_status`), which say what they saw for `GET /loadbalancer/status`.

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
    /// Has been up at least once: a down instance is then checked at `downinter`.
    was_up: bool,
    /// The down state was reported: a flip from up, or (a fixed server, or anything that was
    /// up) `fall` failures in a row while not up.
    down_reported: bool,
}

impl HealthState {
    /// For a fixed server (`servers = [...]`): down until its checks pass, like a starting
    /// instance, but probed at `downinter` (else `inter`) while it fails, as HAProxy probes
    /// every DOWN server; only a process herd started is probed at `fastinter` until ready.
    #[must_use]
    pub fn new_server(rise: u32, fall: u32) -> Self {
        HealthState {
            was_up: true,
            ..HealthState::new(rise, fall)
        }
    }

    #[must_use]
    pub fn new(rise: u32, fall: u32) -> Self {
        HealthState {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            ok_streak: 0,
            fail_streak: 0,
            was_up: false,
            down_reported: false,
        }
    }

    /// New `rise` and `fall` (a config reload), keeping the streaks under way.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// The wait before the next probe, as HAProxy: `fastinter` while starting or changing
    /// state (a `fall` or `rise` streak under way), `downinter` (default `inter`) while an
    /// instance that was up is fully down, else `inter`.
    #[must_use]
    pub fn next_interval(
        &self,
        inter: Duration,
        fastinter: Duration,
        downinter: Option<Duration>,
    ) -> Duration {
        if !self.up && self.was_up && self.ok_streak == 0 {
            downinter.unwrap_or(inter)
        } else if self.transitioning() {
            fastinter
        } else {
            inter
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

    /// Feeds one probe result; returns the new state when it flips (for a fixed server, also
    /// `false` at its first `fall` failures: it is down, not starting).
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            if !self.up && self.ok_streak >= self.rise {
                self.up = true;
                self.was_up = true;
                self.down_reported = false;
                return Some(true);
            }
        } else {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
            // Up, or a fixed server never yet up (it has no start-up to wait out): `fall`
            // failures make it down, reported once.
            if (self.up || self.was_up) && !self.down_reported && self.fail_streak >= self.fall {
                self.up = false;
                self.down_reported = true;
                return Some(false);
            }
        }
        None
    }
}

/// How a probe's detail starts when herd itself could not probe (out of file descriptors):
/// such a check is neither a pass nor a failure of the instance.
pub(crate) const LOCAL: &str = "herd itself: ";

/// One probe: a TCP connect, or an HTTP/1.1 GET of `path` whose status must fall in
/// `expect` (inclusive ranges; HAProxy `http-check expect status`), within `timeout`.
pub async fn probe(addr: SocketAddr, path: Option<&str>, timeout: Duration) -> bool {
    probe_detailed(addr, path, &[(200, 399)], timeout).await.0
}

/// Like [`probe`], with what the probe saw: `"HTTP 200"`, `"connect: ..."`, `"timeout after 1s"`.
pub async fn probe_detailed(
    addr: SocketAddr,
    path: Option<&str>,
    expect: &[(u16, u16)],
    timeout: Duration,
) -> (bool, String) {
    match tokio::time::timeout(timeout, probe_inner(addr, path)).await {
        Err(_) => (false, format!("timeout after {timeout:?}")),
        Ok(Err(detail)) => (false, detail),
        Ok(Ok(None)) => (true, "TCP connect".to_owned()),
        Ok(Ok(Some(status))) => {
            let ok = expect.iter().any(|&(lo, hi)| (lo..=hi).contains(&status));
            (ok, format!("HTTP {status}"))
        }
    }
}

/// `Ok(None)`: TCP connect succeeded (no path); `Ok(Some(status))`: the HTTP answer.
async fn probe_inner(addr: SocketAddr, path: Option<&str>) -> Result<Option<u16>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        if herd_core::local_exhaustion(&e) {
            format!("{LOCAL}{e}")
        } else {
            format!("connect: {e}")
        }
    })?;
    let Some(path) = path else { return Ok(None) };
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    // The connection future is driven inline with the request: no task outlives the probe.
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONNECTION, "close")
        .header(http::header::USER_AGENT, "herd-health-check")
        .body(Empty::new());
    let req = req.map_err(|e| format!("request: {e}"))?;
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
    status
        .map(|s| Some(s.as_u16()))
        .ok_or_else(|| "no HTTP response".to_owned())
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

    #[test]
    fn a_fixed_server_is_reported_down_at_its_first_fall_failures_once() {
        let mut h = HealthState::new_server(2, 2);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None, "already down: not reported again");
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        // A process never yet up is starting, not down: nothing to report.
        let mut p = HealthState::new(1, 1);
        assert_eq!(p.observe(false), None);
        assert_eq!(p.observe(false), None);
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

    #[test]
    fn a_fixed_server_down_from_the_start_is_probed_at_downinter() {
        let (inter, fast, down) = (
            Duration::from_secs(2),
            Duration::from_millis(250),
            Some(Duration::from_secs(10)),
        );
        let mut h = HealthState::new_server(2, 1);
        h.observe(false);
        assert_eq!(h.next_interval(inter, fast, down), down.unwrap());
        // A pass on its way up is followed at fastinter (rise 2), as HAProxy.
        h.observe(true);
        assert_eq!(h.next_interval(inter, fast, down), fast);
        h.observe(true);
        assert!(h.is_up());
        assert_eq!(h.next_interval(inter, fast, down), inter);
    }

    #[test]
    fn downinter_applies_once_an_instance_that_was_up_is_down() {
        let (inter, fast, down) = (
            Duration::from_secs(2),
            Duration::from_millis(250),
            Some(Duration::from_secs(10)),
        );
        let mut h = HealthState::new(1, 1);
        // Starting: fastinter, never downinter.
        assert_eq!(h.next_interval(inter, fast, down), fast);
        h.observe(false);
        assert_eq!(h.next_interval(inter, fast, down), fast);
        h.observe(true);
        assert_eq!(h.next_interval(inter, fast, down), inter);
        h.observe(false);
        assert_eq!(h.next_interval(inter, fast, down), down.unwrap());
        // Without downinter, a dead server is probed at `inter` (HAProxy's default), not at
        // fastinter forever.
        assert_eq!(h.next_interval(inter, fast, None), inter);
        // A rise streak under way: fastinter.
        let mut h = HealthState::new(2, 1);
        h.observe(true);
        h.observe(true);
        h.observe(false);
        h.observe(true);
        assert_eq!(h.next_interval(inter, fast, down), fast);
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
        let (ok, detail) =
            probe_detailed(addr, Some("/health"), &[(204, 204)], Duration::from_secs(1)).await;
        assert!(!ok, "200 is not in expect_status 204");
        assert_eq!(detail, "HTTP 200");
    }
}
