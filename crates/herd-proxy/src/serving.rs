//! Serving: the gateway-wide tasks (certificate watcher, pool and rate-limit sweeper, access
//! log writer), the shards' accept loops (see `shard`), and graceful shutdown: every shard
//! stops accepting, closes its parked connections at once and lets the requests in flight
//! (and tunnels) finish, all within one `shutdown_timeout`; then what is left is closed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// hyper's own limit of header fields (parsed on the stack).
pub(crate) const HYPER_MAX_HEADERS: usize = 100;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::body::ProxyBody;
use crate::client_conn;
use crate::framing;
use crate::handler;
use crate::idle;
use crate::parking::Parking;
use crate::server::Gateway;
use crate::shard;
use crate::tls::ClientTls;

/// What every shard of one gateway shares.
struct Ctx {
    gw: Arc<Gateway>,
    acceptor: Option<TlsAcceptor>,
    /// `max_connections`, across all shards.
    slots: Option<Arc<Semaphore>>,
    /// Stop accepting (shutdown, or another shard failed).
    stop: CancellationToken,
    /// `shutdown_timeout` ran out: close what is still open.
    hard_stop: CancellationToken,
}

/// A running shard: resolves when it has stopped (drained, or hard-stopped).
type ShardDone = futures_util::future::BoxFuture<'static, io::Result<()>>;

impl Gateway {
    /// Serves `listener` on the caller's runtime (one shard) until `shutdown` is cancelled,
    /// then drains connections for at most `shutdown_timeout`.
    ///
    /// # Errors
    /// Reading the listener's address or loading the TLS acceptor fails, or the parking of
    /// released connections cannot be set up; accept errors are logged and retried.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        tracing::info!(local = %listener.local_addr()?, "gateway listening");
        self.stats.connections.set_threads(1);
        self.run(shutdown, move |ctx| {
            let task = tokio::spawn(run_shard(ctx, listener));
            let done: ShardDone = Box::pin(async move { task.await.map_err(io::Error::other)? });
            (vec![done], None)
        })
        .await
    }

    /// Serves each listener (from [`shard::bind`]) on its own thread with its own
    /// single-threaded runtime, until `shutdown` is cancelled; then drains as
    /// [`Gateway::serve`] does. Call it inside a tokio runtime: the gateway-wide tasks run on
    /// that one.
    ///
    /// # Errors
    /// As [`Gateway::serve`], and when a thread or its runtime cannot be started.
    pub async fn serve_threads(
        self: Arc<Self>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        if let Some(first) = listeners.first() {
            tracing::info!(local = %first.local_addr()?, threads = listeners.len(), "gateway listening");
        }
        if listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the gateway needs at least one listener",
            ));
        }
        self.stats.connections.set_threads(listeners.len());
        self.run(shutdown, move |ctx| {
            let mut started = Vec::with_capacity(listeners.len());
            for (i, l) in listeners.into_iter().enumerate() {
                match spawn_thread(i, l, Arc::clone(&ctx)) {
                    Ok(done) => started.push(done),
                    // The threads already running are stopped and drained.
                    Err(e) => return (started, Some(e)),
                }
            }
            (started, None)
        })
        .await
    }

    /// Starts the gateway-wide tasks and the shards (`start` returns those it started, and
    /// why it stopped short), waits for shutdown or a shard's failure, then drains.
    async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        start: impl FnOnce(Arc<Ctx>) -> (Vec<ShardDone>, Option<io::Error>),
    ) -> io::Result<()> {
        let _ = self.control.set(tokio::runtime::Handle::current());
        let settings = self.settings().as_ref().clone();
        let acceptor = match self.tls.get() {
            Some(certs) => Some(certs.acceptor().map_err(io::Error::other)?),
            None => None,
        };
        let stop = shutdown.child_token();
        let ctx = Arc::new(Ctx {
            gw: Arc::clone(&self),
            acceptor,
            // When all permits are out, shards stop accepting until a connection closes; new
            // clients wait in the kernel's listen backlog meanwhile.
            slots: (settings.max_connections > 0)
                .then(|| Arc::new(Semaphore::new(settings.max_connections))),
            stop: stop.clone(),
            hard_stop: CancellationToken::new(),
        });
        let cert_watcher = self.tls.get().map(|certs| {
            tokio::spawn(
                Arc::clone(certs)
                    .watch(stop.clone())
                    .instrument(tracing::debug_span!("tls_cert_watcher")),
            )
        });
        let sweeper = tokio::spawn(
            sweep_pools(Arc::clone(&self), stop.clone())
                .instrument(tracing::debug_span!("pool_sweeper")),
        );
        // Stopped after the connections drained, so their last lines are written.
        let log_stop = CancellationToken::new();
        let log_writer = self.access_log.as_ref().map(|log| {
            tokio::spawn(
                Arc::clone(log)
                    .run(log_stop.clone())
                    .instrument(tracing::debug_span!("access_log")),
            )
        });
        let (started, mut failed) = start(Arc::clone(&ctx));
        let mut shards: FuturesUnordered<ShardDone> = started.into_iter().collect();
        // A shard ends early only when it fails: then all stop.
        if failed.is_none() {
            tokio::select! {
                () = stop.cancelled() => {}
                Some(res) = shards.next() => {
                    failed = res.err();
                    stop.cancel();
                }
            }
        }
        stop.cancel();
        tracing::info!("gateway stopped accepting; draining client connections");
        let shutdown_timeout = self.settings().shutdown_timeout;
        let drain = async {
            while let Some(res) = shards.next().await {
                if let Err(e) = res {
                    failed.get_or_insert(e);
                }
            }
        };
        if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
            tracing::warn!(timeout = ?shutdown_timeout, "client connections still open after shutdown_timeout; closing them");
            ctx.hard_stop.cancel();
            self.tunnels.close_all();
            while shards.next().await.is_some() {}
        }
        let _ = sweeper.await;
        log_stop.cancel();
        if let Some(w) = log_writer {
            let _ = w.await;
        }
        if let Some(w) = cert_watcher {
            let _ = w.await;
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Shard `index` on a thread of its own; what it returns arrives through the `ShardDone`.
fn spawn_thread(
    index: usize,
    listener: std::net::TcpListener,
    ctx: Arc<Ctx>,
) -> io::Result<ShardDone> {
    let (done, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("herd-gw-{index}"))
        .spawn(move || {
            shard::enter(index);
            let res = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    let res = rt.block_on(async {
                        listener.set_nonblocking(true)?;
                        let listener = TcpListener::from_std(listener)?;
                        run_shard(ctx, listener).await
                    });
                    // Whatever is still running here (after a hard stop) is dropped now.
                    drop(rt);
                    res
                });
            let _ = done.send(res);
        })?;
    Ok(Box::pin(async move {
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("a gateway thread panicked")))
    }))
}

/// One shard: accepts until stopped, then waits for its connections (and the gateway's
/// tunnels) to finish, or for the hard stop.
async fn run_shard(ctx: Arc<Ctx>, listener: TcpListener) -> io::Result<()> {
    let res = accept_and_drain(&ctx, listener).await;
    if res.is_err() {
        ctx.stop.cancel();
    }
    res
}

async fn accept_and_drain(ctx: &Arc<Ctx>, listener: TcpListener) -> io::Result<()> {
    let gw = &ctx.gw;
    let settings = gw.settings().as_ref().clone();
    // HTTP/1 connections may be released (`idle_release`). Plain ones are then watched (and
    // closed at idle_timeout or shutdown) by one task per shard; TLS ones wait in their own.
    let releasing = settings.idle_release.is_some();
    let parking = if releasing && ctx.acceptor.is_none() {
        Some(Parking::new(Arc::clone(&gw.stats.connections))?)
    } else {
        None
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper closes HTTP/1 connections that do not send a whole request head within
    // `client_header_timeout` (slowloris), and answers 431 to a head larger than its read
    // buffer (at least 8 KiB, which validation enforces).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.client_header_timeout)
        .max_buf_size(settings.max_header_size);
    if settings.max_headers != HYPER_MAX_HEADERS {
        // Past hyper's default, headers are parsed into the heap rather than the stack.
        builder.http1().max_headers(settings.max_headers);
    }
    builder
        .http2()
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        // WebSocket over HTTP/2 (RFC 8441, see `extconnect`).
        .enable_connect_protocol();
    let shared = Arc::new(client_conn::Shared {
        builder,
        acceptor: ctx.acceptor.clone(),
        max_header_size: settings.max_header_size,
        max_headers: settings.max_headers,
        handshake_timeout: settings.client_header_timeout,
        idle_timeout: settings.idle_timeout,
        idle_release: settings.idle_release,
        shutdown: ctx.stop.clone(),
        hard_stop: ctx.hard_stop.clone(),
        parking: parking.clone(),
    });
    // Every client connection's task on this shard; the drain waits for them.
    let conns = TaskTracker::new();
    let spawner = Arc::new(Spawner {
        gw: Arc::clone(gw),
        shared,
        conns: conns.clone(),
        https: ctx.acceptor.is_some(),
        releasing,
        slots: ctx.slots.clone(),
    });
    let parked = parking.map(|parking| {
        let spawner = Arc::clone(&spawner);
        tokio::spawn(
            parking
                .run(ctx.stop.clone(), move |stream, keep| {
                    spawner.spawn(stream, keep);
                })
                .instrument(tracing::debug_span!("parked_conns")),
        )
    });
    accept_loop(ctx, &listener, &spawner).await;
    drop(listener);
    // The parked connections' watcher ends at once on stop (closing them); awaited first, so
    // that it resumes no connection into the tracker once that is closed.
    if let Some(parked) = parked {
        let _ = parked.await;
    }
    // Upgraded connections (tunnels) left hyper's watch at the `101`; they are waited for
    // within the same deadline.
    conns.close();
    tokio::select! {
        () = async {
            conns.wait().await;
            gw.tunnels.drain().await;
        } => {}
        () = ctx.hard_stop.cancelled() => {}
    }
    Ok(())
}

async fn accept_loop(ctx: &Ctx, listener: &TcpListener, spawner: &Arc<Spawner>) {
    let gw = &ctx.gw;
    let (proxy_protocol, balancers) = {
        let s = gw.settings();
        (s.proxy_protocol, s.proxy_protocol_from.clone())
    };
    loop {
        // Accept first, then wait for a `max_connections` slot: a shard that took a slot
        // before accepting would sit on it while clients wait in another shard's backlog (each
        // shard has its own listening socket). At most one accepted connection per shard waits
        // for a slot, unserved.
        let (stream, peer) = tokio::select! {
            () = ctx.stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "failed to accept a gateway connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match &ctx.slots {
            Some(slots) => tokio::select! {
                () = ctx.stop.cancelled() => return,
                permit = Arc::clone(slots).acquire_owned() => permit.ok(),
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        if proxy_protocol {
            if !crate::proxyproto::allowed(&balancers, peer) {
                tracing::debug!(%peer, "closed a connection from outside proxy_protocol_from");
                continue;
            }
            // The client's address comes first, from the balancer: read it off the accept
            // loop, in a task the shard's drain waits for.
            let (gw, spawner2) = (Arc::clone(gw), Arc::clone(spawner));
            let timeout = gw.settings().client_header_timeout;
            let stop = ctx.stop.clone();
            spawner.conns.spawn(async move {
                let mut stream = stream;
                // As a TLS handshake: no request has started yet, so a shutdown need not wait
                // for the header (a slow or silent balancer would hold it to the timeout).
                let header = tokio::select! {
                    () = stop.cancelled() => return,
                    header = crate::proxyproto::read_header(&mut stream, peer, timeout) => header,
                };
                match header {
                    Ok(client) => spawner2.spawn(stream, admit(&gw, client, slot)),
                    Err(e) => tracing::debug!(%peer, error = %e, "closed a connection without a PROXY protocol header"),
                }
            });
            continue;
        }
        spawner.spawn(stream, admit(gw, peer, slot));
    }
}

/// What an accepted connection from `peer` keeps: its `max_connections` slot, its count under
/// `max_conn_per_ip` (over it, every request is refused), its open count.
fn admit(gw: &Gateway, peer: SocketAddr, slot: Option<OwnedSemaphorePermit>) -> client_conn::Keep {
    let max_conn = gw.settings().max_conn_per_ip;
    let conn_guard = (max_conn > 0).then(|| gw.conns.try_acquire(peer.ip(), max_conn));
    let over_limit = matches!(conn_guard, Some(None));
    if over_limit {
        tracing::debug!(%peer, max_conn, "connection over max_conn_per_ip");
    }
    client_conn::Keep {
        peer,
        _slot: slot,
        _conn_guard: conn_guard.flatten(),
        _open: gw.stats.connections.opened_on(shard::current()),
        over_limit,
        fresh: true,
    }
}

/// Starts connection tasks: for each accepted connection, and again for each parked one
/// whose next request arrives.
struct Spawner {
    gw: Arc<Gateway>,
    shared: Arc<client_conn::Shared>,
    conns: TaskTracker,
    https: bool,
    /// HTTP/1 connections may be released (`idle_release`): they track response bodies.
    releasing: bool,
    /// `max_connections` (HTTP/2 tunnels take a slot each).
    slots: Option<Arc<Semaphore>>,
}

/// The hold of an HTTP/2 stream that may become a tunnel (`handler::StreamBusy`).
fn stream_hold(
    gw: &Gateway,
    slots: Option<&Arc<Semaphore>>,
    peer: SocketAddr,
    activity: &Arc<idle::Activity>,
) -> handler::StreamBusy {
    let slot = slots.map(|s| Arc::clone(s).try_acquire_owned().ok());
    let max = gw.settings().max_conn_per_ip;
    let per_ip = (max > 0).then(|| gw.conns.try_acquire(peer.ip(), max));
    let refused = matches!(slot, Some(None)) || matches!(per_ip, Some(None));
    handler::StreamBusy(Arc::new(handler::StreamHold {
        _busy: activity.busy(),
        _slot: slot.flatten(),
        _per_ip: per_ip.flatten(),
        refused,
    }))
}

impl Spawner {
    fn spawn(&self, stream: tokio::net::TcpStream, keep: client_conn::Keep) {
        let (gw, https, releasing) = (Arc::clone(&self.gw), self.https, self.releasing);
        let (peer, over_limit, fresh) = (keep.peer, keep.over_limit, keep.fresh);
        let slots = self.slots.clone();
        let activity = idle::Activity::new();
        let in_service = Arc::clone(&activity);
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let gw = Arc::clone(&gw);
            if https {
                req.extensions_mut().insert(ClientTls);
            }
            if req.version() == http::Version::HTTP_2 {
                in_service.saw_h2();
                if req.method() == http::Method::CONNECT {
                    // A stream that may become a tunnel: see `handler::StreamBusy`.
                    let busy = stream_hold(&gw, slots.as_ref(), peer, &in_service);
                    req.extensions_mut().insert(busy);
                }
            }
            let busy = in_service.begin();
            let activity = Arc::clone(&in_service);
            let version = req.version();
            let track = releasing && version < http::Version::HTTP_2;
            async move {
                let _busy = busy;
                let resp = if over_limit {
                    if version == http::Version::HTTP_2 {
                        activity.goaway();
                    }
                    let log = gw.access_log.as_ref();
                    let refused = &gw.stats.refused;
                    let answer = handler::too_many_connections(version);
                    handler::refused(log, refused, &req, peer, answer)
                } else {
                    // Boxed: the request's future is KiBs, and hyper moves the service's
                    // future into its dispatcher (HTTP/1) or a spawned task (HTTP/2).
                    crate::heap::pinned(|| handler::serve(gw, req, peer)).await
                };
                if !track {
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                // hyper closes after this response: not a connection to release.
                let close = version < http::Version::HTTP_11
                    || resp
                        .headers()
                        .get(http::header::CONNECTION)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
                if close {
                    activity.closing();
                }
                Ok(resp.map(|body| ProxyBody::wrap(activity.answering(body))))
            }
        });
        let verdict = Arc::new(framing::Verdict::default());
        verdict.hold(keep);
        let conn = client_conn::Conn {
            shared: Arc::clone(&self.shared),
            service: framing::Guarded::new(
                Arc::clone(&verdict),
                service,
                self.gw.access_log.clone(),
                Arc::clone(&self.gw.stats.refused),
                peer,
            ),
            activity,
            verdict,
            fresh,
        };
        self.conns.spawn(
            conn.run(stream)
                .instrument(tracing::debug_span!("client_conn", %peer)),
        );
    }
}

async fn sweep_pools(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let period = gw
        .settings()
        .pool_idle_timeout
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = Instant::now();
                let tables = gw.tables();
                for app in &tables.apps {
                    app.sweep(now);
                }
                // Rate-limit keys whose time has passed hold no state: bounded memory.
                for limit in &tables.limits {
                    limit.sweep(now);
                }
            }
        }
    }
}
