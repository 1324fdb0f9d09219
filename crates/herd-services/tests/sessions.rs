//! Session TTLs against the embedded store's own clock: rolling sessions stay alive while
//! read, others expire. Sleeps are far from the TTL boundaries so machine speed never decides.

mod common;

use std::time::Duration;

use common::*;
use herd_services::sessions::SessionConfig;
use herd_services::{ServiceError, ServicesConfig};
use serde_json::{json, Map};

fn data() -> Map<String, serde_json::Value> {
    json!({"user": "ada"}).as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_sessions_live_while_read_and_others_expire() {
    let dir = TempDir::new("sessions");
    let store = open_store(&dir, false).await;
    let rolling = Node::start(
        &store,
        ServicesConfig {
            sessions: SessionConfig {
                default_ttl: Duration::from_secs(2),
                rolling: true,
                // The renewal window is then a tenth of the 2 s TTL (200 ms): each read
                // below, 400 ms after the last, renews.
                touch_after: Duration::from_secs(60),
                ..SessionConfig::default()
            },
            ..ServicesConfig::default()
        },
    );
    let fixed = Node::start(&store, ServicesConfig::default());
    let kept = rolling
        .services
        .sessions
        .create(data(), None)
        .await
        .unwrap();
    let short = fixed
        .services
        .sessions
        .create(data(), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    // 3.2 s in all, a read every 400 ms: well past the 2 s TTL, never near it between reads.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        rolling.services.sessions.get(&kept.id).await.unwrap();
    }
    let err = fixed.services.sessions.get(&short.id).await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound { .. }), "{err}");
    // Garbage ids are a plain 404, without touching the store's key space.
    let err = fixed.services.sessions.get("../../etc").await.unwrap_err();
    assert!(matches!(err, ServiceError::NotFound { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_guards_every_write() {
    let dir = TempDir::new("cas");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let s = &node.services.sessions;
    let r = s.create(data(), None).await.unwrap();
    let v2 = s.put(&r.id, data(), Some(r.version), None).await.unwrap();
    assert_eq!(v2.version, 2);
    for err in [
        s.put(&r.id, data(), Some(1), None).await.unwrap_err(),
        s.patch(&r.id, data(), Some(1), None).await.unwrap_err(),
        s.delete(&r.id, Some(1)).await.unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                ServiceError::VersionMismatch {
                    current: Some(2),
                    ..
                }
            ),
            "{err}"
        );
    }
    s.delete(&r.id, Some(2)).await.unwrap();
    assert!(matches!(
        s.regenerate(&r.id).await.unwrap_err(),
        ServiceError::NotFound { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_without_if_match_all_succeed_last_write_wins() {
    let dir = TempDir::new("sessions-put");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let s = node.services.sessions.create(data(), None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let services = std::sync::Arc::clone(&node.services);
        let id = s.id.clone();
        tasks.push(tokio::spawn(async move {
            let d = json!({"n": i}).as_object().unwrap().clone();
            services.sessions.put(&id, d, None, None).await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(
            t.await
                .unwrap()
                .expect("an unconditional PUT never conflicts")
                .version,
        );
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 20, "each PUT wrote its own version");
    let now = node.services.sessions.get(&s.id).await.unwrap();
    assert_eq!(now.version, *versions.last().unwrap());
    // With If-Match, a stale version is refused.
    let stale = node
        .services
        .sessions
        .put(&s.id, data(), Some(s.version), None)
        .await;
    assert!(
        matches!(stale, Err(ServiceError::VersionMismatch { .. })),
        "{stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_changes_nothing_keeps_the_version() {
    let dir = TempDir::new("noop");
    let store = open_store(&dir, false).await;
    let node = Node::start(&store, ServicesConfig::default());
    let s = &node.services.sessions;
    let r = s.create(data(), None).await.unwrap();
    // Nothing, the same value, and removing a field that is not there: no write.
    let none = json!({"user": "ada", "gone": null})
        .as_object()
        .unwrap()
        .clone();
    for fields in [Map::new(), data(), none] {
        let same = s.patch(&r.id, fields, Some(r.version), None).await.unwrap();
        assert_eq!(same.version, r.version);
    }
    // A real change writes.
    let changed = json!({"user": "grace"}).as_object().unwrap().clone();
    let next = s
        .patch(&r.id, changed, Some(r.version), None)
        .await
        .unwrap();
    assert_eq!(next.version, r.version + 1);
    // A new TTL always writes (the expiry restarts from now).
    let ttl = s
        .patch(&r.id, Map::new(), None, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(ttl.version, next.version + 1);
}

/// A save of a session this node wrote last is one store call (no read first); a write by
/// another node, or a logout, in between is still seen: the save keeps that node's TTL, or
/// finds no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_after_this_node_s_own_write_is_one_store_call() {
    let dir = TempDir::new("sessions-known");
    let store = open_store(&dir, true).await;
    let calls = || store.unreliable().unwrap().calls();
    let a = Node::start(&store, ServicesConfig::default());
    let b = Node::start(&store, ServicesConfig::default());
    let (sa, sb) = (&a.services.sessions, &b.services.sessions);
    let r = sa.create(data(), None).await.unwrap();
    let before = calls();
    let v2 = sa.put(&r.id, data(), None, None).await.unwrap();
    assert_eq!(
        calls() - before,
        1,
        "a write at the version this node wrote"
    );
    let before = calls();
    sa.touch(&r.id, None).await.unwrap();
    assert_eq!(calls() - before, 1, "a touch likewise");
    let before = calls();
    let v3 = sa.put(&r.id, data(), Some(v2.version), None).await.unwrap();
    assert_eq!(
        calls() - before,
        1,
        "If-Match at the version this node wrote"
    );

    // Node B saves with a TTL of its own; A's next save carries it, at B's version.
    let v4 = sb
        .put(&r.id, data(), None, Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert_eq!(v4.version, v3.version + 1);
    let v5 = sa.put(&r.id, data(), None, None).await.unwrap();
    assert_eq!(v5.version, v4.version + 1);
    assert_eq!(sa.get(&r.id).await.unwrap().ttl_ms, 90_000, "B's TTL kept");
    // With If-Match at a version A did not write, the TTL is read, not guessed.
    sb.put(&r.id, data(), None, Some(Duration::from_secs(70)))
        .await
        .unwrap();
    let current = sb.get(&r.id).await.unwrap().version;
    sa.put(&r.id, data(), Some(current), None).await.unwrap();
    assert_eq!(sa.get(&r.id).await.unwrap().ttl_ms, 70_000);

    // B logs the session out: A's save (and touch) find it gone, and do not bring it back,
    // even at the version A wrote last.
    let last = sa.put(&r.id, data(), None, None).await.unwrap().version;
    sb.delete(&r.id, None).await.unwrap();
    for err in [
        sa.put(&r.id, data(), Some(last), None).await.unwrap_err(),
        sa.put(&r.id, data(), None, None).await.unwrap_err(),
        sa.touch(&r.id, None).await.unwrap_err(),
    ] {
        assert!(matches!(err, ServiceError::NotFound { .. }), "{err}");
    }
    assert!(matches!(
        sa.get(&r.id).await.unwrap_err(),
        ServiceError::NotFound { .. }
    ));
}
