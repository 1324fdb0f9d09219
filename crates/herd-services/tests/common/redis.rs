//! Real redis-server processes for the Redis runs (herd-store's testkit), and store handles on
//! them as one herd node would open them.

use std::sync::Arc;
use std::time::Duration;

use herd_store::{Store, StoreOptions};

pub use herd_store::testkit::{free_port, RedisCluster, RedisServer};

use super::TempDir;

/// One server with its files under `dir`.
pub fn server(dir: &TempDir) -> RedisServer {
    RedisServer::start(&dir.0, free_port(), false)
}

async fn open(urls: Vec<String>, cluster: bool) -> Arc<Store> {
    let opts = StoreOptions::Redis {
        urls,
        cluster,
        timeout: Duration::from_secs(5),
    };
    Arc::new(Store::open(&opts).await.unwrap())
}

/// A new connection to `server` (one herd node's store handle).
pub async fn store(server: &RedisServer) -> Arc<Store> {
    open(vec![server.url()], false).await
}

/// A new connection to `cluster`.
pub async fn cluster_store(cluster: &RedisCluster) -> Arc<Store> {
    open(cluster.urls(), true).await
}
