//! herd's gateway: the L7 reverse proxy in front of every app.
//!
//! Layout:
//! - [`server`]: the `Gateway` (settings and routing tables, swapped atomically on reload);
//!   `serving`: the shards' accept loops, hyper (HTTP/1.1 + h2c) connections, graceful
//!   shutdown; [`shard`]: one thread, runtime and `SO_REUSEPORT` listener per `threads`.
//! - `handler`: one request end to end: route → pick → forward → retry → response.
//! - `route`: the routing table, compiled once from `[[route]]`: matchers, header rewrites,
//!   `strip_prefix`, per-route timeout and retries.
//! - `balance`: pure instance selection (smooth weighted round robin, least connections, P2C,
//!   peak EWMA, consistent hashing with bounded load, first).
//! - `lb`: the route's or app's balancing for a request, sticky pins and cookies (`sticky`,
//!   HMAC-SHA256), the `max_conn` wait (`queue`), passive layer-7 observation.
//! - `pool`: per-instance keep-alive pool of HTTP/1.1 upstream connections, or one shared
//!   HTTP/2 connection for `protocol = "h2c"` apps.
//! - `forward`: hop-by-hop removal and `X-Forwarded-*` headers.
//! - `framing`: request-smuggling guard that follows HTTP/1 framing beside hyper.
//! - `body`: the streamed response body that ends the in-flight count and returns the connection.
//! - `tunnel`: upgraded connections (WebSocket) spliced to one instance, with an idle timeout.
//! - `tls`: `[gateway.tls]` certificates, SNI resolution, reload on SIGHUP or file change;
//!   `redirect`: the optional http→https (308) listener.
//! - `retry` (pure budget) and `resilience`: when a request is sent again, the retry budget,
//!   the circuit breaker settings (breakers live in `herd_core::EndpointStats`), the 503 page.
//! - `compress`: gzip/brotli by `Accept-Encoding`; `tail`: `total_timeout` on the response
//!   body and the `access_log` line (`access_log`: the non-blocking JSON writer).
//! - `idle`: `idle_timeout` on client connections (last byte either way, requests in flight).
//! - `edge`: `X-Request-Id`, the request body limit, security headers.
//! - `gcra` (pure) and `ratelimit`: `[[rate_limit]]`, nginx `limit_req` semantics, state in
//!   memory; `connlimit`: `[gateway] max_conn_per_ip`.
//!
//! The set of instances in rotation is swapped atomically (`arc-swap`) by the supervisor through
//! the [`herd_core::Rotation`] trait; the request path takes no lock on it.

mod access_log;
mod balance;
mod body;
mod client_conn;
mod compress;
mod connlimit;
mod cookie;
mod edge;
mod error;
mod extconnect;
mod forward;
mod framing;
#[doc(hidden)]
pub mod fuzz;
mod gcra;
mod handler;
mod heap;
mod idle;
mod lb;
mod parking;
mod pool;
mod proxyproto;
mod queue;
mod ratelimit;
mod redirect;
mod resilience;
mod retry;
mod route;
pub mod server;
mod serving;
pub mod shard;
mod sticky;
mod tail;
mod target;
pub mod tls;
mod tunnel;
mod upstream;
mod wait;

pub use body::{BoxError, ProxyBody};
pub use error::ProxyError;
pub use redirect::{serve_redirect, RedirectSettings};
pub use server::{Gateway, GatewaySettings};
pub use tls::{StagedCerts, TlsCerts, TlsError};
