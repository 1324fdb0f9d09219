//! Distributed locks with fencing tokens.
//!
//! A lock is the key `herd:{l:NAME}` holding its owner's random token, with a TTL; the store's
//! atomic `acquire` sets it only when absent and bumps the counter `herd:{l:NAME}:fence`, whose
//! new value is the fencing token: strictly increasing per name, so a resource that remembers
//! the highest token it saw can refuse a writer whose lock expired while it paused (the
//! weakness of plain Redis locks and Redlock). Renew and release compare the token first and
//! write only at the version they read (compare-and-delete). The lock key's version is its
//! fence, unique per acquisition, so a holder whose lock expired between its read and its
//! write cannot free or shorten the next holder's lock.
//!
//! On Redis the fence counter is as durable as Redis is: a Redis that loses writes (no AOF, a
//! failover to a replica that lagged, eviction of the counter key) can hand out a fence again.
//! Run Redis with persistence (`appendonly yes`) and `maxmemory-policy noeviction` (or a
//! `volatile-*` policy: the counter has no TTL) where fences guard writes.
//! Waiters retry with a bounded, jittered backoff and wake early on the release message
//! (`herd:{l:NAME}:released`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use herd_store::{Backend as _, Expect, Store};
use serde::Serialize;

use crate::error::{ServiceError, ServiceResult};
use crate::ids;

/// The longest pause between two tries of a waiter (plus up to half of it as jitter).
const MAX_POLL: Duration = Duration::from_millis(100);

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// Proves ownership to renew and release.
    pub token: String,
    /// The fencing token: strictly increasing per lock name.
    pub fence: u64,
}

/// The lock service.
pub struct Locks {
    store: Arc<Store>,
    /// Ends waits at shutdown (503), as a queue's long poll ends.
    shutdown: tokio_util::sync::CancellationToken,
}

fn key(name: &str) -> String {
    format!("herd:{{l:{name}}}")
}

fn fence_key(name: &str) -> String {
    format!("herd:{{l:{name}}}:fence")
}

fn channel(name: &str) -> String {
    format!("herd:{{l:{name}}}:released")
}

fn check_name(name: &str) -> ServiceResult<()> {
    if name.is_empty() || name.len() > 200 || name.contains(['{', '}', '\0']) {
        return Err(ServiceError::invalid(
            "lock name",
            format!(
                "{} is empty, too long or contains '{{', '}}' or NUL",
                crate::error::quoted(name)
            ),
            "use a name like orders-sync",
        ));
    }
    Ok(())
}

fn check_ttl(ttl: Duration) -> ServiceResult<()> {
    if ttl < Duration::from_millis(1) {
        return Err(ServiceError::invalid(
            "ttl",
            "a lock TTL must be at least 1ms",
            "pass e.g. \"ttl\": \"30s\"",
        ));
    }
    Ok(())
}

impl Locks {
    pub(crate) fn new(store: Arc<Store>, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Locks { store, shutdown }
    }

    /// Takes the lock for `ttl`, waiting up to `wait` for the current holder to release it or
    /// for its TTL to run out.
    ///
    /// # Errors
    /// `LockBusy` when still held after `wait`; `Invalid` name or TTL; store errors.
    pub async fn acquire(&self, name: &str, ttl: Duration, wait: Duration) -> ServiceResult<Lease> {
        check_name(name)?;
        check_ttl(ttl)?;
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        // Subscribe before the first try so a release between the try and the wait is seen.
        let mut released = if wait.is_zero() {
            None
        } else {
            self.store.subscribe(&channel(name)).await.ok()
        };
        let mut pause = Duration::from_millis(10);
        loop {
            let token = ids::random_id();
            if let Some(fence) = self
                .store
                .acquire(
                    &key(name),
                    &fence_key(name),
                    Bytes::from(token.clone()),
                    ttl,
                )
                .await?
            {
                return Ok(Lease { token, fence });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ServiceError::LockBusy {
                    name: name.to_owned(),
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                });
            }
            let jitter = {
                use rand::Rng as _;
                Duration::from_millis(rand::rng().random_range(0..=pause.as_millis() as u64 / 2))
            };
            let sleep_until = (now + pause + jitter).min(deadline);
            let shutting_down = async {
                self.shutdown.cancelled().await;
                ServiceError::ShuttingDown {
                    what: format!("the wait for lock {name}"),
                }
            };
            match released.as_mut() {
                Some(sub) => {
                    tokio::select! {
                        _ = sub.next() => {}
                        () = tokio::time::sleep_until(sleep_until) => {}
                        e = shutting_down => return Err(e),
                    }
                }
                None => tokio::select! {
                    () = tokio::time::sleep_until(sleep_until) => {}
                    e = shutting_down => return Err(e),
                },
            }
            // A release wakes waiters at once (pub/sub); an expiry is found by this polling,
            // so its pause stays short: a waiter gets an expired lock within ~150 ms.
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// The holder's version of the lock key, if `token` holds it.
    async fn held(&self, name: &str, token: &str) -> ServiceResult<u64> {
        check_name(name)?;
        match self.store.get(&key(name)).await? {
            Some(v) if v.value.as_ref() == token.as_bytes() => Ok(v.version),
            _ => Err(ServiceError::NotHolder {
                name: name.to_owned(),
            }),
        }
    }

    /// Extends a held lock to `ttl` from now.
    ///
    /// # Errors
    /// `NotHolder` when the token does not hold the lock (expired, taken over); store errors.
    pub async fn renew(&self, name: &str, token: &str, ttl: Duration) -> ServiceResult<()> {
        check_ttl(ttl)?;
        let version = self.held(name, token).await?;
        if self
            .store
            .touch(&key(name), ttl, Expect::Version(version))
            .await?
        {
            Ok(())
        } else {
            Err(ServiceError::NotHolder {
                name: name.to_owned(),
            })
        }
    }

    /// Releases a held lock and wakes waiters.
    ///
    /// # Errors
    /// `NotHolder` when the token does not hold the lock; store errors.
    pub async fn release(&self, name: &str, token: &str) -> ServiceResult<()> {
        let version = self.held(name, token).await?;
        if !self
            .store
            .delete(&key(name), Expect::Version(version))
            .await?
        {
            return Err(ServiceError::NotHolder {
                name: name.to_owned(),
            });
        }
        if let Err(e) = self.store.publish(&channel(name), Bytes::new()).await {
            // Waiters still retry on their own backoff.
            tracing::debug!(lock = name, error = %e, "failed to announce a lock release");
        }
        Ok(())
    }
}
