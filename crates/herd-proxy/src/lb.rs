//! The request path's side of load balancing beyond the pick itself: which algorithm and sticky
//! policy apply (the route's override, else the app's), the sticky pin a request carries and
//! the cookie its response gets, waiting in the `max_conn` queue, and passive layer-7
//! observation of responses.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use herd_config::{Balance, HashKey, RouteBalance, Sticky};
use herd_core::InFlightGuard;
use http::{header, HeaderMap, Response, StatusCode};

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::queue::{QueueError, Take};
use crate::sticky::{self, Pinned, StickyKey};
use crate::upstream::{Acquired, AppUpstreams, Upstream, UpstreamSet};

/// Sticky sessions for one request.
#[derive(Debug)]
struct Sticking<'a> {
    cfg: &'a Sticky,
    key: &'a StickyKey,
    /// What a valid cookie pins, if the request has one.
    pinned: Option<Pinned>,
    /// Unix seconds when the request arrived.
    now: u64,
    /// The client came over TLS: the cookie gets `Secure`.
    secure: bool,
}

/// The balancing in force for one request.
#[derive(Debug)]
pub(crate) struct Choice<'a> {
    pub(crate) balance: Balance,
    pub(crate) hash_key: Option<&'a HashKey>,
    sticky: Option<Sticking<'a>>,
}

impl<'a> Choice<'a> {
    /// The route's overrides over the app's settings; reads the sticky cookie from `headers`.
    pub(crate) fn new(
        app: &'a AppUpstreams,
        overrides: &'a RouteBalance,
        key: &'a StickyKey,
        headers: &HeaderMap,
        secure: bool,
    ) -> Self {
        let (balance, hash_key) = match &overrides.balance {
            Some((b, k)) => (*b, k.as_ref()),
            None => (app.balance, app.hash_key.as_ref()),
        };
        let cfg = match &overrides.sticky {
            Some(s) => s.as_ref(),
            None => app.lb.sticky.as_ref(),
        };
        let sticky = cfg.map(|cfg| {
            let now = unix_now();
            Sticking {
                cfg,
                key,
                pinned: sticky::cookie(headers, &cfg.cookie).and_then(|v| key.verify(v, now)),
                now,
                secure,
            }
        });
        Choice {
            balance,
            hash_key,
            sticky,
        }
    }

    /// Removes the sticky cookie from the request's `Cookie` header(s), keeping the others.
    pub(crate) fn strip_cookie(&self, headers: &mut HeaderMap) {
        if let Some(s) = &self.sticky {
            sticky::strip(headers, &s.cfg.cookie);
        }
    }

    fn pinned(&self) -> Option<&str> {
        self.sticky.as_ref()?.pinned.as_ref().map(|p| p.id.as_str())
    }

    /// Adds `Set-Cookie` pinning the client to `served` when it is not pinned there yet (no
    /// cookie, a forged or expired one, or one naming an instance that could not serve), or
    /// when its cookie is past half its life.
    pub(crate) fn stick(&self, resp: &mut Response<ProxyBody>, served: &str) {
        let Some(s) = &self.sticky else { return };
        // The cookie's name is herd's: an app's own cookie of that name would replace the
        // client's pin (HAProxy's `cookie ... insert` removes it too, unless `preserve`).
        sticky::strip_set_cookie(resp.headers_mut(), &s.cfg.cookie);
        if !sticky::needs_cookie(s.pinned.as_ref(), served, s.now, s.cfg.ttl) {
            return;
        }
        let expires = s.now.saturating_add(s.cfg.ttl.as_secs().max(1));
        let value = s.key.sign(served, expires);
        if let Some(v) = sticky::set_cookie(&s.cfg.cookie, &value, s.cfg.ttl, s.secure) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An instance for the next attempt, counted in flight: the sticky pin if it can serve, else
/// the balancer's pick; when every eligible instance is at its `max_conn`, waits in the app's
/// queue if `may_queue`. `Ok(None)` when nothing is left to try (or, without `may_queue`,
/// nothing is free now).
///
/// # Errors
/// [`ProxyError::QueueFull`] and [`ProxyError::QueueTimeout`] (both 503).
pub(crate) async fn acquire(
    app: &AppUpstreams,
    set: &UpstreamSet,
    tried: &[u64],
    choice: &Choice<'_>,
    affinity: Option<u64>,
    may_queue: bool,
) -> Result<Option<(Arc<Upstream>, InFlightGuard)>, ProxyError> {
    let now = Instant::now();
    // Requests already waiting go first (FIFO), so a newcomer never takes their slot, pinned
    // or not (HAProxy serves a server's queue and the backend's in arrival order). A caller
    // that may not queue (a retry holding a backend's answer to fall back on) only takes a
    // free slot.
    let queued = app.queue.len() > 0;
    if let (Some(id), false) = (choice.pinned(), queued && may_queue) {
        if let Some(found) = app.acquire_pinned(set, id, tried, now) {
            return Ok(Some(found));
        }
        // Gone, down, tried or full: redispatch (HAProxy `option redispatch`); the response
        // carries a new cookie.
    }
    if !queued || !may_queue {
        match app.acquire(set, tried, now, choice.balance, affinity) {
            Acquired::Up(up, guard) => return Ok(Some((up, guard))),
            Acquired::Empty => return Ok(None),
            Acquired::Full if !may_queue => return Ok(None),
            Acquired::Full => {}
        }
    }
    // Boxed, like every cold path of a request: an unboxed wait would size every request's
    // future (see `handler`).
    let waited = Box::pin(app.queue.wait(|| {
        let (current, now) = (app.current(), Instant::now());
        if let Some(found) = choice
            .pinned()
            .and_then(|id| app.acquire_pinned(&current, id, tried, now))
        {
            return Take::Got(found);
        }
        match app.acquire(&current, tried, now, choice.balance, affinity) {
            Acquired::Up(up, guard) => Take::Got((up, guard)),
            Acquired::Full => Take::Wait,
            // Nothing in rotation (a restart, open circuits): instances may come back, wait.
            Acquired::Empty if tried.is_empty() => Take::Wait,
            // Every instance it may use is tried already: step aside for the others.
            Acquired::Empty => Take::Never,
        }
    }))
    .await;
    match waited {
        Ok(found) => Ok(found),
        Err(QueueError::Full) => Err(ProxyError::QueueFull {
            app: app.name.clone(),
        }),
        Err(QueueError::Timeout) => Err(ProxyError::QueueTimeout {
            app: app.name.clone(),
            timeout: app.queue.timeout(),
        }),
    }
}

/// Whether an answer speaks against the instance: a 5xx, except `501 Not Implemented` and
/// `505 HTTP Version Not Supported`, which a client provokes at will with a method or version
/// the app does not serve (HAProxy's `observe layer7` counts them as successes too); counted,
/// any client could take every instance out of rotation with a few `FOO` requests.
fn unhealthy_answer(status: StatusCode) -> bool {
    status.is_server_error()
        && status != StatusCode::NOT_IMPLEMENTED
        && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED
}

/// Passive health from a response: with `observe = "layer7"` a 5xx counts toward `max_fails`
/// like a connect error; anything else is a success (which clears the failure count once
/// `fail_timeout` has passed since the last failure).
pub(crate) fn observe(app: &AppUpstreams, up: &Upstream, status: StatusCode, now: Instant) {
    let stats = &up.endpoint.stats;
    if app.lb.observe_layer7 && unhealthy_answer(status) {
        if stats.record_failed_response(now, app.max_fails, app.fail_timeout) {
            tracing::warn!(app = %app.name, instance = %up.endpoint.id, status = status.as_u16(),
                "instance marked down by passive health (layer 7)");
        }
    } else {
        stats.record_success(now, app.fail_timeout);
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    #[test]
    fn answers_a_client_provokes_do_not_count_against_an_instance() {
        for (code, counts) in [
            (500, true),
            (502, true),
            (503, true),
            (504, true),
            (501, false),
            (505, false),
            (404, false),
            (200, false),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(super::unhealthy_answer(status), counts, "{code}");
        }
    }
}
