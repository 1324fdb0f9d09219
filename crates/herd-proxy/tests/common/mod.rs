//! Shared pieces of the gateway's integration tests: a gateway built from a config text and
//! served on 127.0.0.1, and endpoints to put in rotation.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use herd_core::{Endpoint, EndpointStats, StatsRegistry};
use herd_proxy::Gateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A gateway for `text` (a whole herd.toml), not yet serving.
pub fn build(text: &str) -> (Arc<Gateway>, Arc<StatsRegistry>) {
    let config = herd_config::parse(text, "test.toml", std::path::Path::new(".")).unwrap();
    let stats = Arc::new(StatsRegistry::default());
    (Gateway::new(&config, Arc::clone(&stats)), stats)
}

/// Serves `gw` on a fresh loopback port until the token is cancelled.
pub async fn serve(
    gw: &Arc<Gateway>,
) -> (
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(Arc::clone(gw).serve(l, stop.clone()));
    (addr, stop, served)
}

/// An instance at `addr` with fresh counters.
pub fn endpoint(uid: u64, id: &str, addr: SocketAddr) -> Endpoint {
    endpoint_with(uid, id, addr, Arc::new(EndpointStats::new()))
}

/// An instance at `addr` whose counters the test keeps.
pub fn endpoint_with(uid: u64, id: &str, addr: SocketAddr, stats: Arc<EndpointStats>) -> Endpoint {
    Endpoint {
        uid,
        id: Arc::from(id),
        addr,
        stats,
    }
}
