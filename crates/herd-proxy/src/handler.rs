//! One request end to end: route → pick → forward → retry → response.

use crate::wait::{wait_for_answer, Waited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_core::{Admission, InFlightGuard, RouteStats};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::access_log::{Exchange, Record};
use crate::body::{ProxyBody, UpBody, Upload, UpstreamBody};
use crate::compress;
use crate::edge;
use crate::error::ProxyError;
use crate::forward;
use crate::framing;
use crate::route::RequestView;
use crate::server::Gateway;
use crate::upstream::{AppUpstreams, Upstream};

/// Serves one client request. Never fails: errors become short 4xx/5xx responses.
pub(crate) async fn serve(
    gw: Arc<Gateway>,
    mut req: Request<Incoming>,
    client: SocketAddr,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let (max_body, security, compress_cfg) = {
        let s = gw.settings();
        (s.max_body_size, s.security_headers, Arc::clone(&s.compress))
    };
    let version = req.version();
    let id = edge::request_id(req.headers());
    req.headers_mut()
        .insert(edge::X_REQUEST_ID.clone(), id.clone());
    let wants = compress::Wants::of(req.method(), req.version(), req.headers());
    let head = req.method() == http::Method::HEAD;
    // Logged as 499 (nginx's "client closed request") if the client goes away before the
    // response head: hyper then drops this future.
    let mut pending = crate::access_log::Pending::new(
        gw.access_log
            .as_ref()
            .map(|log| Record::start(log, &req, client, &id, started)),
    );
    let ex = &mut pending.ex;
    let limit = max_body.map(edge::BodyLimit::new);
    if let Some(limit) = &limit {
        req.extensions_mut().insert(limit.clone());
    }
    let mut route_stats = None;
    let result = match edge::check_length(req.headers(), max_body) {
        Ok(()) => forward(&gw, req, client, &mut route_stats, ex).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            // A body cut at the limit fails the upstream request; the client learns why.
            let e = match &limit {
                Some(l) if l.was_exceeded() => ProxyError::BodyTooLarge { limit: l.max },
                _ => e,
            };
            if let ProxyError::RateLimited { limit, .. } = &e {
                ex.rate_limit = Some(limit.clone());
            }
            if matches!(
                e,
                ProxyError::Upstream { .. }
                    | ProxyError::Timeout { .. }
                    | ProxyError::Exhausted { .. }
            ) {
                // As text: `?` would quote it, and a search for the id would miss it.
                let request_id = id.to_str().unwrap_or("-");
                tracing::warn!(request_id, error = %e, "request not proxied");
            } else {
                tracing::debug!(error = %e, "request not proxied");
            }
            let page = ex.error_page.as_ref().filter(|_| {
                matches!(
                    e,
                    ProxyError::NoInstance { .. }
                        | ProxyError::CircuitOpen { .. }
                        | ProxyError::Held { .. }
                        | ProxyError::QueueFull { .. }
                        | ProxyError::QueueTimeout { .. }
                )
            });
            let mut resp = page.map_or_else(|| error_response(&e), |p| p.response());
            if matches!(e, ProxyError::Held { .. }) {
                // The app is starting from zero: worth trying again in a moment.
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            if matches!(
                e,
                ProxyError::BodyTooLarge { .. }
                    | ProxyError::ClientBodyTimeout { .. }
                    | ProxyError::TransferCoding
            ) && version < Version::HTTP_2
            {
                // The rest of the body is not read: the connection cannot be reused.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    edge::finish(&mut resp, id, security);
    match route_stats {
        Some(stats) => stats.record(resp.status().as_u16(), started.elapsed()),
        // No route took it (none matched, or the target was refused before routing).
        None => gw.stats.refused.record(resp.status().as_u16()),
    }
    if ex.compress.unwrap_or(compress_cfg.enabled) {
        resp = compress::apply(&wants, resp, &compress_cfg);
    }
    let (record, ex) = pending.take();
    if let Some(tunnel) = resp.extensions_mut().remove::<crate::tunnel::TunnelLog>() {
        // A tunnel is logged when it closes, with its length and bytes.
        let sender = tunnel
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let (Some(record), Some(sender)) = (record, sender) {
            let _ = sender.send((record, ex, resp.status().as_u16()));
        }
        return resp;
    }
    crate::tail::wrap(resp, ex, record, head)
}

pub(crate) fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    // What went wrong with an instance (its name, address, OS error) is for herd's log, not
    // for whoever sent the request.
    let text = match e {
        ProxyError::Upstream { .. } | ProxyError::NotATunnel { .. } => {
            "herd: bad gateway: no valid response from the app (herd's log says why; quote the X-Request-Id)\n".to_owned()
        }
        ProxyError::UploadCut { .. } => {
            "herd: bad gateway: the app closed the connection before the request body had all arrived (a stalled upload?)\n".to_owned()
        }
        ProxyError::Timeout { .. } => {
            "herd: gateway timeout: the app did not answer in time (response_timeout)\n".to_owned()
        }
        e => format!("herd: {e}\n"),
    };
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let ProxyError::RateLimited { retry_after, .. } = e {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::gcra::retry_after_secs(*retry_after)),
        );
    }
    resp
}

/// An answer herd gives before proxying (a request refused for its framing, a connection over
/// its per-IP limit): it gets an `X-Request-Id` and, with the access log on, its line.
pub(crate) fn refused<B>(
    log: Option<&Arc<crate::access_log::AccessLogger>>,
    counted: &herd_core::RefusedRequests,
    req: &Request<B>,
    client: SocketAddr,
    mut resp: Response<ProxyBody>,
) -> Response<ProxyBody> {
    use http_body::Body as _;
    counted.record(resp.status().as_u16());
    let id = edge::request_id(req.headers());
    if let Some(log) = log {
        let bytes = resp.body().size_hint().exact().unwrap_or(0);
        Record::start(log, req, client, &id, Instant::now()).finish(
            resp.status().as_u16(),
            bytes,
            &Exchange::default(),
        );
    }
    resp.headers_mut().insert(edge::X_REQUEST_ID.clone(), id);
    resp
}

/// The answer on a connection over `[gateway] max_conn_per_ip`: 503, and close it (HTTP/1;
/// an HTTP/2 connection gets GOAWAY after its streams in flight).
pub(crate) fn too_many_connections(version: Version) -> Response<ProxyBody> {
    let mut resp = error_response(&ProxyError::TooManyConnections);
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Requests that may be sent again after they reached a backend: idempotent methods without a
/// body (RFC 9110 §9.2.2), which herd can rebuild.
fn replayable(method: &Method, body: &Incoming) -> bool {
    use http_body::Body as _;
    crate::retry::idempotent(method) && body.is_end_stream()
}

async fn forward(
    gw: &Gateway,
    mut req: Request<Incoming>,
    client: SocketAddr,
    route_stats: &mut Option<Arc<RouteStats>>,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    let started = Instant::now();
    // An HTTP/2 extended CONNECT is routed, limited and sent as the HTTP/1.1 upgrade it stands for.
    let ext_connect = crate::extconnect::normalize(&mut req)?;
    let merge_slashes = gw.settings().merge_slashes;
    crate::target::normalize(&mut req, merge_slashes)?;
    if ext_connect.is_some()
        && req
            .extensions()
            .get::<StreamBusy>()
            .is_some_and(|b| b.0.refused)
    {
        return Err(ProxyError::TooManyConnections);
    }
    let tables = gw.tables();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str));
    let path = herd_config::routing_path(req.uri().path(), merge_slashes)
        .map_err(|reason| ProxyError::BadRequest { reason })?;
    let Some(matched) = tables.routes.find(&RequestView {
        host,
        method: req.method(),
        path: &path,
        headers: req.headers(),
    }) else {
        return Err(if tables.routes.serves_nothing() {
            ProxyError::NoHttpApp
        } else {
            ProxyError::NoRoute
        });
    };
    let app = Arc::clone(&tables.apps[matched.app]);
    let stats = Arc::clone(matched.stats);
    let policy = Arc::clone(matched.policy);
    let sticky_key = Arc::clone(&tables.sticky_key);
    // Decided while the tables are held (no await); the delay is waited after.
    let limited = crate::ratelimit::check_all(
        &tables.limits,
        matched.app,
        &stats.route,
        &path,
        req.headers(),
        client.ip(),
        Instant::now(),
    );
    drop(tables);
    // The path as routed, kept only where it differs from the one sent on (`strip_prefix`).
    let routed = match path {
        std::borrow::Cow::Owned(p) => Some(p),
        std::borrow::Cow::Borrowed(_) => None,
    };
    *route_stats = Some(Arc::clone(&stats));
    let limited = match limited {
        Ok(checked) if checked.shared.is_empty() => Ok(checked.delay),
        // The node's own limits are recorded only once the shared ones admit the request.
        Ok(checked) => match shared_limits(gw, checked.shared).await {
            Ok(d) => crate::ratelimit::commit(&checked.deferred, Instant::now()).map(|l| l.max(d)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let (retry, total_timeout) = {
        let s = gw.settings();
        let retry = crate::retry::Policy {
            left: policy.retries.unwrap_or(s.retries),
            on: policy.retry_on.unwrap_or(s.retry_on),
        };
        (retry, policy.total_timeout.unwrap_or(s.total_timeout))
    };
    if gw.access_log.is_some() {
        ex.route = Some(Arc::from(stats.route.as_str()));
    }
    ex.compress = policy.compress;
    ex.error_page.clone_from(&app.plane.error_page);
    ex.total_timeout = total_timeout;
    ex.deadline = total_timeout.map(|t| started + t);
    if limited.is_err() {
        stats.add_rate_limited();
    }
    let delay = limited?;
    if !delay.is_zero() {
        // Queued at the rate (nginx `burst` without `nodelay`); at most burst / rate.
        tokio::time::sleep(delay).await;
    }

    let (mut parts, body) = req.into_parts();
    // Read before the headers are rewritten; kept across retries.
    let tls = parts.extensions.get::<crate::tls::ClientTls>().is_some();
    let lb = crate::lb::Choice::new(&app, &policy.overrides, &sticky_key, &parts.headers, tls);
    let affinity = AppUpstreams::affinity(
        lb.balance,
        lb.hash_key,
        &parts.headers,
        &parts.uri,
        client.ip(),
    );
    // `target::normalize` has set `Host` from the URI's authority wherever there is one.
    if parts.version == Version::HTTP_2 {
        forward::join_cookies(&mut parts.headers);
    }
    // herd's sticky cookie is herd's: the app does not see it (HAProxy `cookie ... indirect`).
    lb.strip_cookie(&mut parts.headers);
    // An upgrade (HTTP/1.1 `Upgrade`, or HTTP/2 extended CONNECT) keeps or gets its two
    // hop-by-hop headers and goes on a fresh connection.
    let upgrade = match &ext_connect {
        Some(ext) => Some(ext.protocol.clone()),
        None => (parts.version == Version::HTTP_11)
            .then(|| forward::upgrade_request(&parts.headers))
            .flatten(),
    };
    // A client that takes trailers (`TE: trailers`: gRPC, checksums) gets the instance's:
    // herd asks for them in its own name (TE is hop-by-hop) and passes them on.
    let takes_trailers =
        forward::takes_trailers(&parts.headers) || parts.version == Version::HTTP_2;
    forward::remove_hop_by_hop(&mut parts.headers);
    if takes_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let mut tunnel = None;
    if let Some(protocol) = upgrade {
        forward::keep_upgrade(&mut parts.headers, protocol);
        tunnel = parts
            .extensions
            .remove::<OnUpgrade>()
            .map(|client| ClientUpgrade {
                client,
                mark: parts.extensions.remove::<framing::Upgrading>(),
                stream: ext_connect.map(|ext| (ext, parts.extensions.remove::<StreamBusy>())),
            });
    }
    let proto = if parts.extensions.get::<crate::tls::ClientTls>().is_some() {
        "https"
    } else {
        "http"
    };
    forward::add_forwarded(&mut parts.headers, client.ip(), proto);
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    if let Some(uri) = policy.upstream_uri(&parts.uri, routed.as_deref()) {
        parts.uri = uri;
    }
    policy.rewrite_request(&mut parts.headers);
    parts.version = Version::HTTP_11;

    // Keep what is needed to rebuild a bodiless idempotent request for a retry (unless the
    // route allows none).
    let replay = (retry.left > 0 && replayable(&parts.method, &body)).then(|| {
        let mut p = Request::new(());
        *p.method_mut() = parts.method.clone();
        *p.uri_mut() = parts.uri.clone();
        *p.headers_mut() = parts.headers.clone();
        p
    });
    let limit = parts.extensions.remove::<edge::BodyLimit>();
    let (body, sent) = UpBody::client(body, Arc::clone(&stats), limit);
    let req = Request::from_parts(parts, body);
    let sending = Sending {
        replay,
        sent,
        stats: &stats,
        affinity,
        lb,
        // The gateway's own, read per request (one load of the settings, not held across an
        // await): a reload's new `connect_timeout` holds for every instance at once, fixed
        // servers' pools included.
        timeout: {
            let settings = gw.settings();
            Timeouts {
                response: policy.response_timeout.unwrap_or(settings.response_timeout),
                connect: Some(policy.connect_timeout.unwrap_or(settings.connect_timeout)),
            }
        },
        retry,
    };
    let deadline = ex.deadline;
    let sent = send_with_retries(gw, &app, req, sending, tunnel, ex);
    let mut resp = match deadline {
        Some(at) => match tokio::time::timeout_at(at.into(), sent).await {
            Ok(resp) => resp?,
            Err(_) => {
                // Timed from the last send, as a `response_timeout`'s 504 is.
                ex.upstream_time = ex.sent_at.map(|at| at.elapsed());
                return Err(ProxyError::TotalTimeout {
                    timeout: total_timeout.unwrap_or_default(),
                });
            }
        },
        None => sent.await?,
    };
    if !takes_trailers {
        // hyper sends an HTTP/1.1 client no trailers it did not ask for: announce none.
        resp.headers_mut().remove(header::TRAILER);
    }
    policy.rewrite_response(resp.headers_mut());
    Ok(resp)
}

/// Checks `shared = true` limits in the store. The call runs on the control plane's runtime:
/// the store's connection (and the task a reconnect spawns) must not end up on a gateway
/// thread, whose runtime ends when the gateway stops. If that runtime is gone, the limits
/// count on this node, as when the store cannot answer.
async fn shared_limits(
    gw: &Gateway,
    pending: crate::ratelimit::Pending,
) -> Result<Duration, ProxyError> {
    use crate::ratelimit::check_shared;
    let store = gw.shared_store();
    match gw.control.get() {
        Some(control) => {
            let fallback = pending.clone();
            let task = control.spawn(async move { check_shared(store.as_deref(), pending).await });
            match task.await {
                Ok(decided) => decided,
                Err(_) => Box::pin(check_shared(None, fallback)).await,
            }
        }
        None => Box::pin(check_shared(store.as_deref(), pending)).await,
    }
}

/// The client side of a request that asks to switch protocols.
struct ClientUpgrade {
    client: OnUpgrade,
    /// Stops the framing guard once the connection is a tunnel.
    mark: Option<framing::Upgrading>,
    /// An HTTP/2 stream (extended CONNECT): how to answer it, and what keeps its connection
    /// counted as busy while the tunnel lasts.
    stream: Option<(crate::extconnect::ExtConnect, Option<StreamBusy>)>,
}

/// What an HTTP/2 stream that may become a tunnel holds (put in the request's extensions by
/// the connection's service; the tunnel keeps a clone): its connection counted busy, so that
/// `idle_timeout` does not close it under the tunnel, and, since a tunnel is one more
/// long-lived connection, a `max_connections` slot and a count under `max_conn_per_ip`.
#[derive(Debug, Clone)]
pub(crate) struct StreamBusy(pub(crate) Arc<StreamHold>);

#[derive(Debug)]
pub(crate) struct StreamHold {
    pub(crate) _busy: crate::idle::RequestGuard,
    pub(crate) _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    pub(crate) _per_ip: Option<crate::connlimit::ConnGuard>,
    /// No slot or per-IP count was free: the stream is refused with 503.
    pub(crate) refused: bool,
}

/// What `send_with_retries` needs besides the request.
struct Sending<'a> {
    replay: Option<Request<()>>,
    sent: Arc<crate::body::Upload>,
    stats: &'a Arc<RouteStats>,
    affinity: Option<u64>,
    /// The algorithm and sticky pin in force for this request.
    lb: crate::lb::Choice<'a>,
    timeout: Timeouts,
    retry: crate::retry::Policy,
}

/// One attempt's timeouts.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// The route's `response_timeout`, else the gateway's.
    response: Duration,
    /// The route's `connect_timeout` (else the pool dials with the gateway's).
    connect: Option<Duration>,
}

async fn send_with_retries(
    gw: &Gateway,
    app: &AppUpstreams,
    mut req: Request<UpBody>,
    sending: Sending<'_>,
    mut tunnel: Option<ClientUpgrade>,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Sending {
        replay,
        sent,
        stats,
        affinity,
        lb,
        timeout,
        mut retry,
    } = sending;
    let mut set = app.current();
    if set.is_empty() {
        if let Some(hold) = app.hold() {
            // Scaled to zero, or not started yet: wait for the first instance instead of
            // failing.
            let ready = || !app.current().is_empty();
            let waited = if hold.first {
                Box::pin(app.demand.wait_first(hold.timeout, hold.queue, ready)).await
            } else {
                Box::pin(app.demand.hold(hold.timeout, hold.queue, ready)).await
            };
            waited.map_err(|e| ProxyError::Held {
                app: app.name.clone(),
                why: e,
            })?;
            set = app.current();
        }
    }
    app.plane.deposit(Instant::now());
    let circuit = &app.plane.circuit;
    let mut tried: Vec<u64> = Vec::new();
    let mut stale_retried = false;
    // Instances whose connection broke under this very request after it was sent. A request
    // that broke two is not sent to a third: it may be what breaks them (a request that crashes
    // the app would otherwise take every instance down in turn).
    let mut broke: u32 = 0;
    let mut last_err: Option<ProxyError> = None;
    // The instance a status retry picked before it let go of the answer it retries.
    let mut picked = None;
    loop {
        let now = Instant::now();
        // Counted in flight from the pick, so a drain never sees zero while a request is
        // on its way to this instance.
        let next = match picked.take() {
            Some(next) => Some(next),
            None => crate::lb::acquire(app, &set, &tried, &lb, affinity, true).await?,
        };
        let Some((up, guard)) = next else {
            return Err(last_err.unwrap_or_else(|| {
                let now = Instant::now();
                if !set.is_empty()
                    && set
                        .iter()
                        .all(|u| !u.endpoint.stats.circuit_would_admit(now, circuit))
                {
                    ProxyError::CircuitOpen {
                        app: app.name.clone(),
                    }
                } else {
                    ProxyError::NoInstance {
                        app: app.name.clone(),
                    }
                }
            }));
        };
        tried.push(up.endpoint.uid);
        let mut probe = match up.endpoint.stats.circuit_admit(now, circuit) {
            // Another request took the half-open probe slot since the pick: not an attempt.
            Admission::Refused => {
                drop(guard);
                continue;
            }
            Admission::Admitted => ProbeSlot(None),
            Admission::Probe(run) => ProbeSlot(Some((Arc::clone(&up.endpoint.stats), run))),
        };
        let body_done = matches!(req.body(), UpBody::Client(..)).then(|| Arc::clone(&sent));
        let sent_at = Instant::now();
        // The log names the instance tried, as nginx's `$upstream_addr`, also when the
        // exchange ends (`total_timeout`) before it answers.
        ex.instance = Some((Arc::clone(&up.endpoint.id), up.endpoint.addr));
        ex.sent_at = Some(sent_at);
        ex.upstream_time = None;
        // Boxed: an attempt's future (pool checkout, send, timeout) is a few KiB, and held
        // unboxed it would be laid out more than once in every request's future.
        let attempted = crate::heap::pinned(|| {
            attempt(gw, &up, req, guard, body_done, stats, timeout, &mut tunnel)
        });
        match attempted.await {
            Ok(mut resp) => {
                let done = Instant::now();
                ex.upstream_time = Some(done.saturating_duration_since(sent_at));
                let status = resp.status().as_u16();
                // A gateway failure (Envoy's): the instance could not serve. A `500` is the
                // app's answer about one request; counted, a few calls to one broken URL
                // opened the circuit of every healthy instance.
                note_circuit(app, &up, done, !matches!(status, 502..=504));
                probe.reported();
                crate::lb::observe(app, &up, resp.status(), done);
                if retry.on.status(status) && retry.left > 0 {
                    if let Some(orig) = &replay {
                        // The next instance is taken before this answer is let go: when none
                        // can take the request now, the client gets this answer (a retry never
                        // waits in the `max_conn` queue, so this does not wait).
                        // Boxed: a second acquire laid out in this future would be copied with
                        // every request (see `attempt` below).
                        let next = if app.has_other(&set, &tried, done) {
                            Box::pin(crate::lb::acquire(app, &set, &tried, &lb, affinity, false))
                                .await
                                .ok()
                                .flatten()
                        } else {
                            None
                        };
                        if next.is_some() && app.plane.withdraw(done) {
                            tracing::debug!(app = %app.name, instance = %up.endpoint.id, status,
                                "retrying on another instance");
                            drop(resp);
                            picked = next;
                            retry.left -= 1;
                            ex.retries += 1;
                            stats.add_retry();
                            req = rebuild(orig);
                            continue;
                        }
                    }
                }
                lb.stick(&mut resp, &up.endpoint.id);
                return Ok(resp);
            }
            Err(Failure {
                err,
                request,
                stale,
            }) => {
                ex.upstream_time = Some(sent_at.elapsed());
                if matches!(
                    err,
                    ProxyError::BadRequest { .. }
                        | ProxyError::ClientClosed
                        | ProxyError::ClientBodyTimeout { .. }
                        | ProxyError::NotATunnel { .. }
                        | ProxyError::UploadCut { .. }
                        | ProxyError::Exhausted { .. }
                ) {
                    // Not retried, not held against the instance: the client's body failed,
                    // or the instance answered, only not with the tunnel asked for (an
                    // ordinary page at that path: a client could otherwise open the circuit
                    // of every instance by asking for tunnels where there are none).
                    return Err(err);
                }
                let timed_out = matches!(err, ProxyError::Timeout { .. });
                // A request sent on a reused connection is a keep-alive race only if it will
                // be sent again; otherwise its failure counts like any other.
                let will_replay = replay.is_some()
                    && retry.left > 0
                    && if timed_out {
                        retry.on.timeout
                    } else {
                        retry.on.reset && broke < 1
                    };
                let stale = stale && (request.is_some() || will_replay);
                if stale && !stale_retried {
                    // A pooled connection closed before the write: a keep-alive race, not a sign
                    // the instance is unhealthy. Try it once more, on a fresh connection if need be.
                    stale_retried = true;
                    tried.pop();
                } else {
                    if request.is_none() && !timed_out {
                        broke += 1;
                        if broke == 2 {
                            tracing::warn!(app = %app.name, instance = %up.endpoint.id, error = %err,
                                "a request broke the connection of a second instance; not sent to another (it may be what breaks them)");
                        }
                    }
                    note_circuit(app, &up, now, false);
                    probe.reported();
                    if up
                        .endpoint
                        .stats
                        .record_failure(now, app.max_fails, app.fail_timeout)
                    {
                        tracing::warn!(app = %app.name, instance = %up.endpoint.id, error = %err,
                            "instance marked down by passive health");
                    }
                }
                // Never sent: always moves on (it cost the backend nothing). Sent: a replay,
                // when `retry_on` and the retries left allow.
                let replayed = match (&request, &replay) {
                    (Some(_), _) => None,
                    (None, Some(orig)) if will_replay => Some(orig),
                    (None, _) => return Err(err),
                };
                // A replay takes its retry from the budget first (an exhausted budget answers
                // at once, never after a wait in the `max_conn` queue), then the next
                // instance; one that finds none gives the retry back, counts none, and the
                // client gets this failure.
                let withdrawn = match replayed {
                    Some(_) => {
                        let at = Instant::now();
                        if !app.plane.withdraw(at) {
                            return Err(err);
                        }
                        Some(at)
                    }
                    None => None,
                };
                let next =
                    Box::pin(crate::lb::acquire(app, &set, &tried, &lb, affinity, true)).await;
                let next = match next {
                    Ok(Some(next)) => next,
                    found => {
                        if let Some(at) = withdrawn {
                            app.plane.refund(at);
                        }
                        // No instance left: this failure; the queue's own error otherwise.
                        found?;
                        return Err(err);
                    }
                };
                req = match (request, replayed) {
                    (Some(r), _) => r,
                    (None, Some(orig)) => {
                        retry.left -= 1;
                        rebuild(orig)
                    }
                    (None, None) => return Err(err),
                };
                picked = Some(next);
                ex.retries += 1;
                stats.add_retry();
                tracing::debug!(app = %app.name, instance = %up.endpoint.id, error = %err, "retrying");
                last_err = Some(err);
            }
        }
    }
}

/// A half-open circuit's probe slot taken by an attempt: given back when the attempt ends
/// without an outcome for the breaker (the client went away or failed its body, or a stale
/// pooled connection sent nothing), so the next request can probe at once rather than after
/// another `circuit_open`.
struct ProbeSlot(Option<(Arc<herd_core::EndpointStats>, u32)>);

impl ProbeSlot {
    /// The attempt's outcome was fed to the breaker.
    fn reported(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        if let Some((stats, run)) = self.0.take() {
            stats.circuit_release_probe(run);
        }
    }
}

/// Feeds an outcome to the instance's circuit breaker and logs its transitions.
fn note_circuit(app: &AppUpstreams, up: &Upstream, now: Instant, ok: bool) {
    if let Some(state) = up
        .endpoint
        .stats
        .circuit_record(now, ok, &app.plane.circuit)
    {
        tracing::warn!(app = %app.name, instance = %up.endpoint.id, circuit = state.as_str(),
            "circuit breaker changed state");
    }
}

/// How soon after the write a reused connection's close counts as the keep-alive race (the
/// instance had closed it as idle; its RST comes back within a round trip). Later, the
/// instance failed while working on the request.
const KEEPALIVE_RACE: Duration = Duration::from_secs(1);

/// The connection ended (closed or reset) before any answer to the request.
fn closed_unanswered(e: &hyper::Error) -> bool {
    crate::body::connection_ended(e)
}

fn rebuild(orig: &Request<()>) -> Request<UpBody> {
    let mut r = Request::new(UpBody::Empty);
    *r.method_mut() = orig.method().clone();
    *r.uri_mut() = orig.uri().clone();
    *r.headers_mut() = orig.headers().clone();
    r
}

struct Failure {
    err: ProxyError,
    /// The request, when it never reached the backend.
    request: Option<Request<UpBody>>,
    /// A pooled connection was found closed before the request was written.
    stale: bool,
}

// One past clippy's limit: the route's timeouts joined the per-attempt inputs.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    gw: &Gateway,
    up: &Arc<Upstream>,
    req: Request<UpBody>,
    guard: InFlightGuard,
    body_done: Option<Arc<crate::body::Upload>>,
    stats: &Arc<RouteStats>,
    timeouts: Timeouts,
    tunnel: &mut Option<ClientUpgrade>,
) -> Result<Response<ProxyBody>, Failure> {
    let instance = || up.endpoint.id.to_string();
    let conn = if tunnel.is_some() {
        up.pool
            .connect_for_upgrade(timeouts.connect)
            .await
            .map(|c| (c, false))
    } else {
        up.pool.checkout(timeouts.connect).await
    };
    let timeout = timeouts.response;
    let mut req = req;
    let (mut conn, reused) = match conn {
        Ok(c) => c,
        Err(crate::pool::ConnectError::Io(e)) if herd_core::local_exhaustion(&e) => {
            // herd is out of descriptors: not the instance's failure (a flood of idle
            // client connections must not open every instance's circuit).
            return Err(Failure {
                err: ProxyError::Exhausted {
                    reason: e.to_string(),
                },
                request: None,
                stale: false,
            });
        }
        Err(e) => {
            stats.add_connect_error();
            return Err(Failure {
                err: ProxyError::Upstream {
                    instance: instance(),
                    reason: e.to_string(),
                },
                request: Some(req),
                stale: false,
            });
        }
    };
    if conn.is_h2() {
        to_h2(&mut req, up.endpoint.addr);
    } else if !req.headers().contains_key(header::HOST) {
        // An HTTP/1.0 request may come without one, but herd speaks HTTP/1.1 upstream, where
        // it is required (RFC 9112 §3.2: a server answers 400 without it). nginx sends the
        // upstream's name; here, the instance's address.
        if let Ok(host) = HeaderValue::from_str(&up.endpoint.addr.to_string()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let sent_at = Instant::now();
    // A tunnel's request body is the tunnel itself: its answer is timed from the send.
    let upload = body_done.as_deref().filter(|_| tunnel.is_none());
    let answered = match wait_for_answer(
        conn.try_send_request(req),
        upload,
        sent_at,
        timeout,
        gw.settings().client_body_timeout,
    )
    .await
    {
        Waited::Answer(a) => a,
        Waited::TimedOut => {
            return Err(Failure {
                err: ProxyError::Timeout {
                    instance: instance(),
                    timeout,
                },
                request: None,
                stale: false,
            })
        }
        Waited::ClientStalled(timeout) => {
            return Err(Failure {
                err: ProxyError::ClientBodyTimeout { timeout },
                request: None,
                stale: false,
            })
        }
    };
    match answered {
        Err(mut e) => {
            let client_failed = body_done.as_deref().is_some_and(Upload::client_failed);
            if conn.is_h2() && !client_failed {
                up.pool.forget_h2().await;
            }
            let request = e.take_message();
            if client_failed && body_done.as_deref().is_some_and(Upload::client_gone) {
                // The client left mid-upload: 499 in the log, and not the instance's fault.
                return Err(Failure {
                    err: ProxyError::ClientClosed,
                    request: None,
                    stale: false,
                });
            }
            if e.error().is_user() || client_failed {
                // The client's body failed (malformed, or past `max_body_size`): the client's
                // fault, not the instance's.
                return Err(Failure {
                    err: ProxyError::BadRequest {
                        reason: "the request body could not be read",
                    },
                    request: None,
                    stale: false,
                });
            }
            // The instance gave up while the client's body was still arriving: a stalled (or
            // merely slow) upload met the instance's own timeout. Not held against it; an
            // instance that really died fails its next connection or health check.
            let uploading = body_done.as_deref().filter(|u| !u.is_done());
            if let (Some(upload), None) = (uploading, &request) {
                let idle = upload.last_read().elapsed();
                tracing::info!(instance = %up.endpoint.id, client_idle = ?idle, error = %e.error(), "the instance closed the connection during the upload; not counted against it");
                return Err(Failure {
                    err: ProxyError::UploadCut {
                        instance: instance(),
                        reason: e.into_error().to_string(),
                    },
                    request: None,
                    stale: false,
                });
            }
            // A reused connection that the instance closed as the request went out (it
            // answered nothing): the keep-alive race again, after the write. nginx tries such
            // a request once more too (a cached connection's failure adds a try).
            let closed = reused
                && request.is_none()
                && sent_at.elapsed() < KEEPALIVE_RACE
                && closed_unanswered(e.error());
            let reason = e.into_error().to_string();
            Err(Failure {
                stale: request.is_some() || closed,
                err: ProxyError::Upstream {
                    instance: instance(),
                    reason,
                },
                request,
            })
        }
        Ok(resp) => {
            let took = sent_at.elapsed();
            up.endpoint
                .stats
                .window
                .record(took, resp.status().is_server_error());
            up.ewma.record(sent_at + took, took);
            // An HTTP/2 stream's upgrade: the backend's handshake is checked before the tunnel
            // is taken (a refusal may be retried, with the tunnel), and a 2xx that is not a
            // `101` must not reach the client, to which any 2xx means "tunnel open".
            if let Some(ext) = tunnel
                .as_ref()
                .and_then(|t| t.stream.as_ref())
                .map(|s| &s.0)
            {
                let refused = match resp.status() {
                    StatusCode::SWITCHING_PROTOCOLS => ext.check(resp.headers()).err(),
                    s if s.is_success() => {
                        Some("the instance answered an upgrade with a success, not 101")
                    }
                    _ => None,
                };
                if let Some(why) = refused {
                    tracing::warn!(instance = %up.endpoint.id, "refused an HTTP/2 WebSocket tunnel: {why}");
                    return Err(Failure {
                        err: ProxyError::NotATunnel {
                            instance: instance(),
                            reason: why,
                        },
                        request: None,
                        stale: false,
                    });
                }
            }
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client) = tunnel.take() {
                    return Ok(open_tunnel(gw, up, resp, client, guard));
                }
                // RFC 9110 §15.2.2: a 101 only answers a request that asked to upgrade.
                let why = "answered 101 Switching Protocols to a request that asked for no upgrade";
                tracing::warn!(instance = %up.endpoint.id, "{why}");
                return Err(Failure {
                    err: ProxyError::NotATunnel {
                        instance: instance(),
                        reason: why,
                    },
                    request: None,
                    stale: false,
                });
            }
            // Any other answer to an upgrade request is an ordinary response.
            let (mut parts, body) = resp.into_parts();
            forward::remove_hop_by_hop_response(&mut parts.headers);
            // herd speaks HTTP/1.1 to its clients whatever the instance spoke (an HTTP/1.0
            // backend's version would otherwise reach the status line: RFC 9110 6.2, nginx).
            parts.version = Version::HTTP_11;
            let body = UpstreamBody::new(
                body,
                guard,
                conn,
                Arc::clone(&up.pool),
                body_done,
                Arc::clone(stats),
            );
            Ok(Response::from_parts(parts, ProxyBody::Upstream(body)))
        }
    }
}

/// An HTTP/2 request needs `:scheme` and `:authority`: the absolute URI carries them (the
/// client's `Host`, else the instance's address), and the `Host` field goes (RFC 9113 §8.3.1).
fn to_h2(req: &mut Request<UpBody>, addr: std::net::SocketAddr) {
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| addr.to_string());
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    if let Ok(uri) = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(pq)
        .build()
    {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
}

/// The backend switched protocols: answer the client's `101` and splice both connections once
/// hyper hands them over. The tunnel holds the in-flight guard for its whole life.
fn open_tunnel(
    gw: &Gateway,
    up: &Upstream,
    mut resp: Response<Incoming>,
    client: ClientUpgrade,
    guard: InFlightGuard,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    let keep = client.mark.as_ref().and_then(framing::Upgrading::tunnel);
    let (mut parts, _) = resp.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    let mut busy = None;
    if let Some((_, stream_busy)) = client.stream {
        // An HTTP/2 stream (its handshake checked in `attempt`): the `101` is the stream's `200`.
        crate::extconnect::strip(&mut parts.headers);
        forward::remove_hop_by_hop(&mut parts.headers);
        parts.status = StatusCode::OK;
        busy = stream_busy;
    } else {
        forward::remove_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            forward::keep_upgrade(&mut parts.headers, protocol);
        }
    }
    let span = tracing::debug_span!("tunnel", instance = %up.endpoint.id);
    let idle = gw.settings().tunnel_idle_timeout;
    let held = crate::tunnel::Held {
        _in_flight: guard,
        _conn: keep,
        _stream: busy,
    };
    let (log_tx, log_rx) = tokio::sync::oneshot::channel();
    gw.tunnels
        .spawn(client.client, upstream, held, idle, span, log_rx);
    let mut resp = Response::from_parts(parts, ProxyBody::text(""));
    resp.extensions_mut()
        .insert(crate::tunnel::TunnelLog(Arc::new(std::sync::Mutex::new(
            Some(log_tx),
        ))));
    resp
}
