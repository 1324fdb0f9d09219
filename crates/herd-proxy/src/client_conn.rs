//! One client connection's task: the TLS handshake (if any), then hyper serving the socket
//! until the connection closes, or until an HTTP/1 keep-alive connection has been quiet long
//! enough between requests (`idle_release`): then hyper lets go of the socket. A plain one's
//! task hands the bare socket to the gateway's [`Parking`] and ends, and the next byte starts
//! a new connection task on the same socket; a TLS one's task keeps the TLS session, waits for
//! the next byte itself and serves it with a new hyper connection. Either way hyper's head-read
//! timer (`client_header_timeout`) does not run between requests: `idle_timeout` does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use herd_core::OpenConnection;

use crate::body::ProxyBody;
use crate::connlimit::ConnGuard;
use crate::framing::{Scan, Verdict};
use crate::idle::{Activity, Home, Reclaim, Watched};
use crate::parking::Parking;
use herd_core::linger::Lingering;

/// The client stream: plain TCP, or TLS (boxed: a plain connection should not carry the size
/// of TLS state).
/// Plain connections close with a lingering close (an early `413` reaches a client still
/// uploading); TLS ones as rustls closes them.
type Stream = Either<Lingering, Box<TlsStream<TcpStream>>>;
/// What hyper reads and writes: the stream behind the idle watch and the framing guard.
type Io = Scan<Watched<Stream>>;

/// What every connection of one gateway shares (one `Arc`, so each task stays small).
pub(crate) struct Shared {
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) acceptor: Option<TlsAcceptor>,
    pub(crate) max_header_size: usize,
    /// `[gateway] max_headers`: the framing scanner parses as many as hyper accepts.
    pub(crate) max_headers: usize,
    /// Bounds the TLS handshake (`client_header_timeout`).
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) idle_release: Option<Duration>,
    /// Stop: finish the requests in flight, then close.
    pub(crate) shutdown: CancellationToken,
    /// `shutdown_timeout` ran out: close now.
    pub(crate) hard_stop: CancellationToken,
    /// Where released plain connections wait; `None` when none is (`idle_release = "off"`,
    /// or TLS: a released TLS connection waits in its own task).
    pub(crate) parking: Option<Arc<Parking<Keep>>>,
}

/// What a connection keeps for its whole life, parked or served.
#[derive(Debug)]
pub(crate) struct Keep {
    pub(crate) peer: SocketAddr,
    /// Its `max_connections` permit (held: dropping it lets another connection in).
    pub(crate) _slot: Option<OwnedSemaphorePermit>,
    /// Its count under `max_conn_per_ip` (held, like the permit).
    pub(crate) _conn_guard: Option<ConnGuard>,
    /// Counted as open (held, like the permit).
    pub(crate) _open: OpenConnection,
    /// Over `max_conn_per_ip`: every request is refused (and the connection closed), on a
    /// resumed connection too.
    pub(crate) over_limit: bool,
    /// Not served yet (a resumed connection already has its next request's bytes waiting).
    pub(crate) fresh: bool,
}

/// One connection's own state, shared with its service.
pub(crate) struct Conn<S> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) service: S,
    pub(crate) activity: Arc<Activity>,
    /// Holds the connection's [`Keep`] (see [`Verdict::hold`]).
    pub(crate) verdict: Arc<Verdict>,
    /// Its [`Keep::fresh`].
    pub(crate) fresh: bool,
}

/// nginx's answer to plain HTTP on a TLS port, instead of a TLS alert a browser or curl
/// shows as garbage.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 61\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to the HTTPS port: use https\n";

/// A TLS connection whose first byte starts an HTTP method (a TLS handshake starts with
/// 0x16) gets [`PLAIN_TO_TLS`] and is closed (the error says why).
async fn refuse_plain_http(stream: &mut TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        use tokio::io::AsyncReadExt as _;
        stream.write_all(PLAIN_TO_TLS).await?;
        let _ = stream.shutdown().await;
        // Read what the client sent before closing (nginx's lingering close): closing with
        // unread bytes sends a reset, which may reach the client before the 400 does.
        let mut sink = [0u8; 4096];
        let linger = async {
            let mut left = 64 * 1024usize;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), linger).await;
        return Err(std::io::Error::other("plain HTTP sent to the TLS listener"));
    }
    Ok(())
}

impl<S> Conn<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serves the connection until it closes or is parked.
    pub(crate) async fn run(self, stream: TcpStream) {
        let Some(stream) = self.handshake(stream).await else {
            return;
        };
        // hyper's head-read timer starts with the first byte (its HTTP/1-or-2 detection waits
        // for the first bytes without a timer), so a plain connection that sends nothing is
        // closed here at `client_header_timeout`, as nginx does, instead of at `idle_timeout`.
        if let (Either::Left(tcp), true) = (&stream, self.fresh) {
            // `peek` (unlike `readable`, which may wake falsely) waits for a byte or the end.
            let mut byte = [0u8; 1];
            let first =
                tokio::time::timeout(self.shared.handshake_timeout, tcp.get_ref().peek(&mut byte));
            tokio::select! {
                () = self.shared.hard_stop.cancelled() => return,
                () = self.shared.shutdown.cancelled() => return,
                waited = first => if waited.is_err() {
                    tracing::debug!("closing a connection that sent nothing within client_header_timeout");
                    return;
                },
            }
        }
        // Plain HTTP/1 is released to the parking (no task); TLS HTTP/1 gives back hyper's
        // state and waits in its own task, keeping the TLS session.
        let release = (self.shared.idle_release).filter(|_| match stream {
            Either::Left(_) => self.shared.parking.is_some(),
            Either::Right(_) => true,
        });
        let stream = Watched::new(stream, Arc::clone(&self.activity));
        let mut io = Scan::new(
            stream,
            self.shared.max_header_size,
            self.shared.max_headers,
            Arc::clone(&self.verdict),
        );
        loop {
            let home = Arc::new(Home::default());
            let Some(marks) = self.cycle(io, &home, release).await else {
                return;
            };
            // Taken back only if hyper let go while nothing came in: a request or bytes read
            // meanwhile may have been answered with `Connection: close` or left in hyper's
            // buffer, so such a connection is closed.
            let Some(back) = home.take() else { return };
            if self.activity.marks() != marks {
                return;
            }
            // Between two requests, every byte answered: the next byte starts a new cycle.
            let deadline = self.activity.last() + self.shared.idle_timeout;
            if let Either::Right(tls) = back.get_ref().get_ref() {
                if !self.next_byte(tls.get_ref().0, deadline).await {
                    return;
                }
                // The scanner is between two requests and goes on counting them.
                io = back;
                continue;
            }
            let Either::Left(tcp) = back.into_inner().into_inner() else {
                return;
            };
            let tcp = tcp.into_inner();
            if let (Some(parking), Some(mut keep)) =
                (&self.shared.parking, self.verdict.take_keep())
            {
                keep.fresh = false;
                parking.park(tcp, keep, deadline);
            }
            return;
        }
    }

    /// A released TLS connection waits (in its task, holding no HTTP state) for the first
    /// byte of its next request: `true` when one came, `false` when the connection should
    /// close (the client closed it, `idle_timeout` passed, or the gateway stops; the parking
    /// of plain connections closes them at once on shutdown too).
    async fn next_byte(&self, tcp: &TcpStream, deadline: tokio::time::Instant) -> bool {
        let mut byte = [0u8; 1];
        tokio::select! {
            () = self.shared.shutdown.cancelled() => false,
            () = self.shared.hard_stop.cancelled() => false,
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!(idle_timeout = ?self.shared.idle_timeout, "closing an idle client connection");
                false
            }
            // `peek` (unlike `readable`) waits for a byte or the end, and takes nothing.
            got = tcp.peek(&mut byte) => matches!(got, Ok(n) if n > 0),
        }
    }

    /// The TLS handshake, bounded by `client_header_timeout`; `None` when it failed.
    async fn handshake(&self, stream: TcpStream) -> Option<Stream> {
        let Some(acceptor) = &self.shared.acceptor else {
            return Some(Either::Left(Lingering::new(stream)));
        };
        // Boxed: the handshake's state would otherwise size every connection's task.
        let accept = Box::pin(tokio::time::timeout(
            self.shared.handshake_timeout,
            async move {
                let mut stream = stream;
                refuse_plain_http(&mut stream).await?;
                acceptor.accept(stream).await
            },
        ));
        tokio::select! {
            // A handshake has no request to finish: a shutdown need not wait for it.
            () = self.shared.shutdown.cancelled() => None,
            () = self.shared.hard_stop.cancelled() => None,
            tls = accept => match tls {
                Ok(Ok(tls)) => Some(Either::Right(Box::new(tls))),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            },
        }
    }

    /// One cycle of hyper serving the socket. `Some(marks)` when the cycle ended in a release
    /// (the stream is then in `home`), with the connection's activity marks at the release.
    async fn cycle(
        &self,
        io: Io,
        home: &Arc<Home<Io>>,
        release: Option<Duration>,
    ) -> Option<(u64, u64)> {
        home.disarm();
        let conn = self
            .shared
            .builder
            .serve_connection_with_upgrades(
                TokioIo::new(Reclaim::new(io, Arc::clone(home))),
                self.service.clone(),
            )
            .into_owned();
        let mut conn = std::pin::pin!(conn);
        let (activity, shared) = (&self.activity, &self.shared);
        let cycle_start = activity.marks();
        let release_point = async {
            match release {
                Some(after) => {
                    activity
                        .release_point(after, || self.verdict.between_requests())
                        .await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                None
            }
            () = shared.hard_stop.cancelled() => None,
            () = activity.idle(shared.idle_timeout) => {
                tracing::debug!(idle_timeout = ?shared.idle_timeout, "closing an idle client connection");
                None
            }
            () = activity.goaway_asked() => {
                // An HTTP/2 connection over `max_conn_per_ip`: its refused streams are
                // answered, then GOAWAY makes the client reconnect (and be counted afresh).
                // hyper closes once the client answers GOAWAY's PING: one that never does (or
                // keeps sending) is closed after `idle_timeout` all the same.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = shared.hard_stop.cancelled() => {}
                    () = tokio::time::sleep(shared.idle_timeout) => {}
                }
                None
            }
            () = shared.shutdown.cancelled() => {
                // Stop after the requests in flight (HTTP/2: GOAWAY).
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = shared.hard_stop.cancelled() => {}
                }
                None
            }
            () = release_point => {
                let marks = activity.marks();
                home.arm();
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    // An error (a body cut short) closes the connection, unless this cycle
                    // read nothing at all (hyper was still waiting for the first bytes, and
                    // says it was cancelled).
                    res = conn.as_mut() => {
                        (res.is_ok() || activity.marks() == cycle_start).then_some(marks)
                    }
                    () = shared.hard_stop.cancelled() => None,
                    // A client that stops reading keeps hyper from finishing: closed like
                    // any idle connection. (At shutdown the wait goes on: hyper is already
                    // finishing, and parking then refuses.)
                    () = activity.idle(shared.idle_timeout) => None,
                }
            }
        }
    }
}
