use std::time::Duration;

/// Why the gateway could not produce a backend response. Each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Routes are configured and none matches the request.
    #[error("no route matches this request")]
    NoRoute,
    /// Every app is a worker (`worker = true`): nothing here serves HTTP.
    #[error("no app here serves HTTP: every app is a worker (worker = true)")]
    NoHttpApp,
    /// No instance of the app is in rotation.
    #[error("no ready instance for app {app}")]
    NoInstance { app: String },
    /// Instances are in rotation, but every one's circuit is open after failures.
    #[error("every instance of app {app} has its circuit open after failures; retry shortly")]
    CircuitOpen { app: String },
    /// The app is scaled to zero and no instance arrived in time (or too many requests wait).
    #[error("no instance of app {app} is ready: {why}")]
    Held {
        app: String,
        why: herd_core::HoldError,
    },
    /// Every attempt failed before a response head arrived.
    #[error("instance {instance} failed: {reason}")]
    Upstream { instance: String, reason: String },
    /// The instance answered a tunnel request (an upgrade, or HTTP/2's extended CONNECT)
    /// with something that cannot be passed on as the answer to it: a 2xx to an extended
    /// CONNECT (to the client, "tunnel open"), a 101 to a request that asked for no upgrade,
    /// or a handshake that does not match the request. 502, but not the instance's failure:
    /// it answered.
    #[error("instance {instance} did not open the tunnel: {reason}")]
    NotATunnel {
        instance: String,
        reason: &'static str,
    },
    /// The instance broke the connection off while the client's request body was still
    /// arriving (typically its own idle timeout ran out on a stalled upload). 502, but not the
    /// instance's failure, nor retried: a client that stalls its uploads could otherwise open
    /// the circuit of every instance.
    #[error("instance {instance} closed the connection while the request body was still arriving: {reason}")]
    UploadCut { instance: String, reason: String },
    /// The backend took longer than `response_timeout` to answer.
    #[error("instance {instance} did not answer within {timeout:?}")]
    Timeout { instance: String, timeout: Duration },
    /// A request `Transfer-Encoding` other than `chunked`.
    #[error("transfer codings other than chunked are not supported (send the body chunked or with Content-Length, and label compressed content with Content-Encoding)")]
    TransferCoding,
    /// The client paused its request body for longer than `client_body_timeout`.
    #[error("the request body stalled for {timeout:?} (client_body_timeout)")]
    ClientBodyTimeout { timeout: Duration },
    /// The exchange ran past `total_timeout` before a response head.
    #[error("request did not complete within total_timeout {timeout:?}")]
    TotalTimeout { timeout: Duration },
    /// The client went away while its request body was being read (its connection closed or
    /// broke mid-upload). Nobody receives the answer; it is logged as 499, nginx's "client
    /// closed request" (nginx itself logs 400 there; herd keeps 400 for malformed bodies).
    #[error("the client closed the connection before its request body was complete")]
    ClientClosed,
    /// The request could not be forwarded as received.
    #[error("bad request: {reason}")]
    BadRequest { reason: &'static str },
    /// The request body is larger than `[gateway] max_body_size`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// A `[[rate_limit]]` rejected the request (answered with `Retry-After`).
    #[error("rate limit {limit} exceeded; retry in {}s", crate::gcra::retry_after_secs(*retry_after))]
    RateLimited {
        limit: String,
        retry_after: Duration,
        status: http::StatusCode,
    },
    /// Every eligible server is at its `max_conn` and the app's `queue` is full.
    #[error("every server of app {app} is at max_conn and its queue is full")]
    QueueFull { app: String },
    /// The request waited `queue_timeout` for a server under its `max_conn` (HAProxy `timeout queue`).
    #[error("no server of app {app} had a free slot within queue_timeout ({timeout:?})")]
    QueueTimeout { app: String, timeout: Duration },
    /// The client already has `[gateway] max_conn_per_ip` connections open.
    #[error("too many connections from this address")]
    TooManyConnections,
    /// herd could not open a connection to the instance for want of its own resources (file
    /// descriptors): 503, not counted against the instance.
    #[error("herd is out of resources ({reason}); try again shortly")]
    Exhausted { reason: String },
    /// A CONNECT without `:protocol`: herd is a reverse proxy, not a forward proxy's tunnel.
    #[error("CONNECT is not supported (herd is a reverse proxy; WebSockets use Upgrade, or extended CONNECT with :protocol over HTTP/2)")]
    ConnectRefused,
}

/// nginx's 499 "client closed request": logged, never received by anyone.
pub(crate) const CLIENT_CLOSED_REQUEST: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(code) => code,
    Err(_) => http::StatusCode::BAD_REQUEST,
};

impl ProxyError {
    /// The status code the client receives.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        match self {
            ProxyError::NoRoute => http::StatusCode::NOT_FOUND,
            ProxyError::NoInstance { .. }
            | ProxyError::NoHttpApp
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Held { .. }
            | ProxyError::QueueFull { .. }
            | ProxyError::QueueTimeout { .. }
            | ProxyError::TooManyConnections
            | ProxyError::Exhausted { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited { status, .. } => *status,
            ProxyError::Upstream { .. }
            | ProxyError::NotATunnel { .. }
            | ProxyError::UploadCut { .. } => http::StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } | ProxyError::TotalTimeout { .. } => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::BadRequest { .. } => http::StatusCode::BAD_REQUEST,
            ProxyError::ClientClosed => CLIENT_CLOSED_REQUEST,
            ProxyError::ClientBodyTimeout { .. } => http::StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ConnectRefused | ProxyError::TransferCoding => {
                http::StatusCode::NOT_IMPLEMENTED
            }
        }
    }
}
