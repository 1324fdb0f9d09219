//! The Redis backend: a single Redis (via `ConnectionManager`, which reconnects by itself) or a
//! Redis Cluster (the async cluster client, seeded with several URLs).
//!
//! Layout: [`conn`] (opening and running commands), [`scripts`] (the Lua scripts for conditional
//! and multi-key calls), [`codec`] (value encoding, slots, error mapping), [`health`] (status),
//! [`pubsub`] (the subscriber task). Every call is bounded by the configured timeout
//! (`StoreError::Timeout`); a refused or lost connection is `StoreError::Unavailable` at once.

mod codec;
mod conn;
mod health;
mod pubsub;
mod scripts;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::RedisResult;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::codec::{decode, map_err, parse_score, redact, same_slot, score_arg};
use self::conn::Conn;
use self::health::Health;
use crate::hub::Hub;
use crate::queue::{
    header_halves, Added, Finished, JobState, Keep, Leased, QueueStep, StepOutcome,
};
use crate::{
    args, Backend, Expect, Gcra, GcraDecision, StoreError, StoreResult, StoreStatus, Subscription,
    Txn, TxnOp, TxnOutcome, Versioned, Written,
};

/// How often the background probe refreshes `status()` while nothing else talks to Redis.
const PING_EVERY: Duration = Duration::from_secs(1);

/// The key the probe writes. A write, not a PING: a server that answers but refuses writes
/// (out of memory, a replica, a cluster without a master for the slot) cannot serve herd, and
/// a PING would call it healthy between two failed calls.
const PROBE_KEY: &str = "herd:{probe}";

/// The Redis backend; cheap to clone (one shared handle).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    backend: &'static str,
    cluster: bool,
    target: String,
    timeout: Duration,
    health: Arc<Health>,
    hub: Arc<Hub>,
    subscribe: mpsc::UnboundedSender<pubsub::Request>,
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl RedisStore {
    /// Connects to one Redis (`cluster: false`, one URL) or a Redis Cluster (seed URLs).
    ///
    /// # Errors
    /// `Invalid` for a bad URL, no URL, several URLs without `cluster`, a zero timeout or
    /// credentials the server refused. A server that does not answer within about twice
    /// `timeout` is not an error: the store opens without it (every call fails with
    /// `Unavailable` and the reason, `status()` says so) and connects in the background.
    pub async fn open(
        urls: &[String],
        cluster: bool,
        timeout: Duration,
    ) -> StoreResult<RedisStore> {
        if urls.is_empty() {
            return Err(StoreError::Invalid(
                "no Redis URL given; set [store] url (or cluster_urls)".into(),
            ));
        }
        if timeout.is_zero() {
            return Err(StoreError::Invalid(
                "the Redis call timeout must be above zero".into(),
            ));
        }
        let backend = if cluster { "redis-cluster" } else { "redis" };
        let target = urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",");
        let (tx, rx) = mpsc::unbounded_channel();
        let (hub, health, cancel) = (
            Arc::new(Hub::default()),
            Arc::new(Health::default()),
            CancellationToken::new(),
        );
        let conn = match Conn::open(urls, cluster, timeout).await {
            Ok(conn) => conn,
            // Unreachable is not a reason to keep the gateway down: start, answer 503 from
            // the services, and connect as soon as Redis is there.
            Err(StoreError::Unavailable { reason, .. }) => {
                let e = StoreError::Unavailable {
                    backend,
                    reason: reason.clone(),
                };
                tracing::error!(
                    backend, target = %target, error = %e,
                    "the store cannot be reached; starting without it: the services answer 503 \
                     and shared rate limits count per node until it connects (retrying)"
                );
                health.record::<()>(&Err(e), false);
                Conn::later(urls.to_vec(), cluster, timeout, reason, cancel.clone())
            }
            Err(e) => return Err(e),
        };
        pubsub::spawn(
            urls.to_vec(),
            backend,
            timeout,
            hub.clone(),
            rx,
            cancel.clone(),
        );
        spawn_pinger(
            conn.clone(),
            cluster,
            backend,
            timeout,
            health.clone(),
            cancel.clone(),
        );
        if conn.is_connected() {
            tracing::info!(backend, target = %target, "redis store connected");
        }
        let inner = Inner {
            conn,
            backend,
            cluster,
            target,
            timeout,
            health,
            hub,
            subscribe: tx,
            cancel,
        };
        Ok(RedisStore {
            inner: Arc::new(inner),
        })
    }

    /// Stops the subscriber and ping tasks and ends subscriptions; later calls fail with
    /// `Unavailable`. The connection closes when the last handle is dropped.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.hub.close();
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.inner.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one Redis call under the timeout, maps its error and records the connection health.
    async fn run<T>(
        &self,
        key: &str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> StoreResult<T> {
        let backend = self.inner.backend;
        if self.inner.cancel.is_cancelled() {
            let reason = "the store is shut down".into();
            return Err(StoreError::Unavailable { backend, reason });
        }
        let (result, refused) = match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => (Err(map_err(backend, key, &e)), answered(&e)),
            Err(_) => (
                Err(StoreError::Timeout {
                    backend,
                    millis: self.millis(),
                }),
                false,
            ),
        };
        self.inner.health.record(&result, refused);
        result
    }

    fn check_slots(&self, call: &str, keys: &[&str]) -> StoreResult<()> {
        if self.inner.cluster {
            same_slot(call, keys)?;
        }
        Ok(())
    }
}

/// The server answered, with an error (as opposed to a connection that failed).
fn answered(e: &redis::RedisError) -> bool {
    !(e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error())
}

fn spawn_pinger(
    conn: Conn,
    cluster: bool,
    backend: &'static str,
    timeout: Duration,
    health: Arc<Health>,
    cancel: CancellationToken,
) {
    let task = async move {
        let mut tick = tokio::time::interval(PING_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let probe = redis::cmd("SET")
                .arg(PROBE_KEY)
                .arg(1)
                .arg("PX")
                .arg(10_000)
                .to_owned();
            let timed_out = || StoreError::Timeout {
                backend,
                millis: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let (mut result, mut refused) =
                match tokio::time::timeout(timeout, conn.query::<()>(&probe)).await {
                    Ok(Ok(())) => (Ok(()), false),
                    Ok(Err(e)) => (Err(map_err(backend, PROBE_KEY, &e)), answered(&e)),
                    Err(_) => (Err(timed_out()), false),
                };
            // Channels: a user that lost them (an ACL change) gets its SUBSCRIBE refused, which
            // the subscriber cannot see; a PUBLISH reports it.
            if result.is_ok() {
                let publish = redis::cmd("PUBLISH")
                    .arg(conn::PROBE_CHANNEL)
                    .arg("")
                    .to_owned();
                match tokio::time::timeout(timeout, conn.query::<()>(&publish)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.code() == Some("NOPERM") => {
                        let reason = format!("{} ({e})", conn::NO_CHANNELS);
                        (result, refused) =
                            (Err(StoreError::Unavailable { backend, reason }), true);
                    }
                    Ok(Err(e)) => (result, refused) = (Err(map_err(backend, "", &e)), answered(&e)),
                    Err(_) => result = Err(timed_out()),
                }
            }
            // The probe's key lives in one slot: the cluster's own view tells of the others.
            if cluster && result.is_ok() {
                let info = redis::cmd("CLUSTER").arg("INFO").to_owned();
                match tokio::time::timeout(timeout, conn.query::<String>(&info)).await {
                    Ok(Ok(text)) => {
                        if let Some(problem) = health::failing_slots(&text) {
                            let reason = format!("Redis Cluster: {problem}");
                            (result, refused) =
                                (Err(StoreError::Unavailable { backend, reason }), true);
                        }
                    }
                    Ok(Err(e)) => {
                        (result, refused) = (Err(map_err(backend, "", &e)), answered(&e));
                    }
                    Err(_) => result = Err(timed_out()),
                }
            }
            health.record_probe(&result, refused);
        }
    };
    tokio::spawn(task.instrument(tracing::info_span!("store_pinger", backend)));
}

fn mode(expect: Expect) -> (&'static str, u64) {
    match expect {
        Expect::Any => ("any", 0),
        Expect::Absent => ("absent", 0),
        Expect::Version(v) => ("version", v),
    }
}

fn pairs(flat: Vec<String>) -> StoreResult<Vec<(String, f64)>> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        out.push((m, parse_score(&s)?));
    }
    Ok(out)
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl Backend for RedisStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        let raw: Option<Vec<u8>> = self
            .run(key, self.inner.conn.query(redis::cmd("GET").arg(key)))
            .await?;
        decode(key, raw)
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Versioned>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.check_slots(
            "get_many",
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let raw: Vec<Option<Vec<u8>>> = self
            .run(
                &keys[0],
                self.inner.conn.query(redis::cmd("MGET").arg(keys)),
            )
            .await?;
        keys.iter().zip(raw).map(|(k, r)| decode(k, r)).collect()
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> StoreResult<Written> {
        let ttl_ms = ttl.map(|t| args::ttl_ms(key, t)).transpose()?.unwrap_or(0);
        let (m, v) = mode(expect);
        let mut inv = scripts::PUT.prepare_invoke();
        inv.key(key).arg(m).arg(v).arg(value.as_ref()).arg(ttl_ms);
        let (ok, ver): (i64, i64) = self.run(key, self.inner.conn.eval(&inv)).await?;
        Ok(match (ok, u64::try_from(ver).ok()) {
            (1, Some(v)) => Written::Ok(v),
            (_, current) => Written::Conflict(current),
        })
    }

    async fn delete(&self, key: &str, expect: Expect) -> StoreResult<bool> {
        let n: i64 = match expect {
            Expect::Absent => return Ok(false),
            Expect::Any => {
                self.run(key, self.inner.conn.query(redis::cmd("DEL").arg(key)))
                    .await?
            }
            Expect::Version(v) => {
                let mut inv = scripts::DELETE_VERSION.prepare_invoke();
                inv.key(key).arg(v);
                self.run(key, self.inner.conn.eval(&inv)).await?
            }
        };
        Ok(n > 0)
    }

    async fn touch(&self, key: &str, ttl: Duration, expect: Expect) -> StoreResult<bool> {
        let ttl_ms = args::ttl_ms(key, ttl)?;
        let n: i64 = match expect {
            Expect::Absent => return Ok(false),
            Expect::Any => {
                self.run(
                    key,
                    self.inner
                        .conn
                        .query(redis::cmd("PEXPIRE").arg(key).arg(ttl_ms)),
                )
                .await?
            }
            Expect::Version(v) => {
                let mut inv = scripts::TOUCH_VERSION.prepare_invoke();
                inv.key(key).arg(v).arg(ttl_ms);
                self.run(key, self.inner.conn.eval(&inv)).await?
            }
        };
        Ok(n == 1)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Option<Duration>) -> StoreResult<i64> {
        let ttl_ms = ttl.map(|t| args::ttl_ms(key, t)).transpose()?.unwrap_or(0);
        let mut inv = scripts::INCR.prepare_invoke();
        inv.key(key).arg(by).arg(ttl_ms);
        self.run(key, self.inner.conn.eval(&inv)).await
    }

    async fn acquire(
        &self,
        key: &str,
        fence_key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        let ttl_ms = args::ttl_ms(key, ttl)?;
        self.check_slots("acquire", &[key, fence_key])?;
        let mut inv = scripts::ACQUIRE.prepare_invoke();
        inv.key(key).key(fence_key).arg(value.as_ref()).arg(ttl_ms);
        let fence: Option<i64> = self.run(key, self.inner.conn.eval(&inv)).await?;
        Ok(fence.map(|f| u64::try_from(f).unwrap_or(0)))
    }

    async fn zadd(&self, key: &str, members: &[(String, f64)]) -> StoreResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key);
        for (m, s) in members {
            cmd.arg(score_arg(args::score(key, *s)?)).arg(m);
        }
        let _: i64 = self.run(key, self.inner.conn.query(&cmd)).await?;
        Ok(())
    }

    async fn zrem(&self, key: &str, members: &[String]) -> StoreResult<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        self.run(
            key,
            self.inner
                .conn
                .query(redis::cmd("ZREM").arg(key).arg(members)),
        )
        .await
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        limit: usize,
    ) -> StoreResult<Vec<(String, f64)>> {
        let (min, max) = (args::score(key, min)?, args::score(key, max)?);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(key)
            .arg(score_arg(min))
            .arg(score_arg(max))
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        pairs(self.run(key, self.inner.conn.query(&cmd)).await?)
    }

    async fn zscore(&self, key: &str, member: &str) -> StoreResult<Option<f64>> {
        let raw: Option<String> = self
            .run(
                key,
                self.inner
                    .conn
                    .query(redis::cmd("ZSCORE").arg(key).arg(member)),
            )
            .await?;
        raw.map(|s| parse_score(&s)).transpose()
    }

    async fn zcard(&self, key: &str) -> StoreResult<u64> {
        self.run(key, self.inner.conn.query(redis::cmd("ZCARD").arg(key)))
            .await
    }

    async fn zcount(&self, key: &str, min: f64, max: f64) -> StoreResult<u64> {
        let (min, max) = (args::score(key, min)?, args::score(key, max)?);
        let mut cmd = redis::cmd("ZCOUNT");
        cmd.arg(key).arg(score_arg(min)).arg(score_arg(max));
        self.run(key, self.inner.conn.query(&cmd)).await
    }

    async fn zmove(
        &self,
        src: &str,
        dst: &str,
        max_score: f64,
        count: usize,
        dst_score: f64,
    ) -> StoreResult<Vec<(String, f64)>> {
        let (max_score, dst_score) = (args::score(src, max_score)?, args::score(dst, dst_score)?);
        self.check_slots("zmove", &[src, dst])?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut inv = scripts::ZMOVE.prepare_invoke();
        inv.key(src)
            .key(dst)
            .arg(score_arg(max_score))
            .arg(count)
            .arg(score_arg(dst_score));
        pairs(self.run(src, self.inner.conn.eval(&inv)).await?)
    }

    async fn txn(&self, txn: &Txn) -> StoreResult<TxnOutcome> {
        txn.validate()?;
        let keys: Vec<&str> = txn.keys().collect();
        let Some(first) = keys.first().copied() else {
            return Ok(TxnOutcome::Committed);
        };
        self.check_slots("txn", &keys)?;
        let mut inv = scripts::TXN.prepare_invoke();
        for key in &keys {
            inv.key(*key);
        }
        inv.arg(txn.checks.len());
        for (_, expect) in &txn.checks {
            let (m, v) = mode(*expect);
            inv.arg(m).arg(v);
        }
        for op in &txn.ops {
            match op {
                TxnOp::Put { key, value, ttl } => {
                    let ttl_ms = ttl.map(|t| args::ttl_ms(key, t)).transpose()?.unwrap_or(0);
                    inv.arg("put").arg(ttl_ms).arg(value.as_ref());
                }
                TxnOp::Delete { .. } => {
                    inv.arg("del");
                }
                TxnOp::Zadd { members, .. } => {
                    inv.arg("zadd").arg(members.len());
                    for (m, s) in members {
                        inv.arg(score_arg(*s)).arg(m);
                    }
                }
                TxnOp::Zrem { members, .. } => {
                    inv.arg("zrem").arg(members.len()).arg(members);
                }
            }
        }
        let (ok, check, ver): (i64, i64, i64) = self.run(first, self.inner.conn.eval(&inv)).await?;
        Ok(if ok == 1 {
            TxnOutcome::Committed
        } else {
            TxnOutcome::Conflict {
                check: usize::try_from(check - 1).unwrap_or(0),
                current: u64::try_from(ver).ok(),
            }
        })
    }

    async fn queue_step(&self, step: &QueueStep) -> StoreResult<StepOutcome> {
        step.validate()?;
        let k = &step.keys;
        let mut keys = vec![
            k.waiting(),
            k.active(),
            k.completed(),
            k.paused(),
            k.delayed(),
            k.set("seq"),
        ];
        if let Some(f) = &step.finish {
            keys.push(k.job(&f.id));
        }
        self.check_slots(
            "queue_step",
            &keys.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        let mut inv = scripts::QUEUE_STEP.prepare_invoke();
        for key in &keys {
            inv.key(key);
        }
        inv.arg(k.job(""));
        match &step.finish {
            Some(f) => inv
                .arg("1")
                .arg(&f.id)
                .arg(&f.token)
                .arg(f.now_ms)
                .arg(f.result.as_ref()),
            None => inv.arg("0").arg("").arg("").arg(0).arg(""),
        };
        match &step.claim {
            Some(c) => {
                inv.arg(c.tokens.len()).arg(c.deadline_ms).arg(&c.tokens);
            }
            None => {
                inv.arg(0).arg(0);
            }
        }
        inv.arg(step.adds.len());
        for a in &step.adds {
            let (before, after) = header_halves(&a.header);
            let place = match a.rank {
                None => "d".to_owned(),
                Some(_) if a.lifo => "l".to_owned(),
                Some(r) => format!("w{r}"),
            };
            inv.arg(a.id.as_deref().unwrap_or(""))
                .arg(place)
                .arg(a.header.due_ms)
                .arg(before)
                .arg(after)
                .arg(a.body.as_ref());
        }
        #[allow(clippy::type_complexity)]
        let (flat_added, fin, detail, flat, others, paused): (
            Vec<Vec<u8>>,
            String,
            String,
            Vec<Vec<u8>>,
            Vec<String>,
            i64,
        ) = self.run(&keys[0], self.inner.conn.eval(&inv)).await?;
        let backend = self.inner.backend;
        let bad = |what: &str| StoreError::Backend {
            backend,
            reason: format!("the queue step script answered {what}"),
        };
        let finished = match fin.as_str() {
            "none" => None,
            "completed" => Some(Finished::Completed {
                keep: Keep::parse(&detail).ok_or_else(|| bad("a bad keep field"))?,
            }),
            "deleted" => Some(Finished::Deleted),
            "missing" => Some(Finished::NotFound),
            "lease" => Some(Finished::WrongLease(
                JobState::from_code(&detail).ok_or_else(|| bad("an unknown state"))?,
            )),
            "legacy" => Some(Finished::Unreadable),
            other => return Err(bad(&format!("{other:?}"))),
        };
        let deadline = step.claim.as_ref().map_or(0, |c| c.deadline_ms);
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad("a non-UTF-8 id or token"));
        let mut leased = Vec::with_capacity(flat.len() / 4);
        let mut it = flat.into_iter();
        while let (Some(id), Some(attempt), Some(token), Some(body)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            leased.push(Leased {
                id: text(id)?,
                attempt: text(attempt)?.parse().map_err(|_| bad("a bad attempt"))?,
                token: text(token)?,
                lease_until_ms: deadline,
                body: Bytes::from(body),
            });
        }
        let mut added = Vec::with_capacity(flat_added.len() / 3);
        let mut it = flat_added.into_iter();
        while let (Some(id), Some(seq), Some(new)) = (it.next(), it.next(), it.next()) {
            added.push(Added {
                id: text(id)?,
                seq: text(seq)?.parse().map_err(|_| bad("a bad seq"))?,
                new: new == b"1",
            });
        }
        Ok(StepOutcome {
            added,
            finished,
            leased,
            others,
            paused: paused == 1,
        })
    }

    async fn gcra(&self, key: &str, params: Gcra) -> StoreResult<GcraDecision> {
        let (t, tau) = args::gcra_us(key, params)?;
        let mut inv = scripts::GCRA.prepare_invoke();
        inv.key(key).arg(t).arg(tau);
        let (allowed, us): (i64, i64) = self.run(key, self.inner.conn.eval(&inv)).await?;
        Ok(if allowed == 1 {
            GcraDecision::Allow { delay: micros(us) }
        } else {
            GcraDecision::Deny {
                retry_after: micros(us),
            }
        })
    }

    async fn publish(&self, channel: &str, message: Bytes) -> StoreResult<()> {
        let cmd = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message.as_ref())
            .to_owned();
        let _: i64 = self.run(channel, self.inner.conn.query(&cmd)).await?;
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> StoreResult<Subscription> {
        let backend = self.inner.backend;
        let gone = || StoreError::Unavailable {
            backend,
            reason: "the store is shut down".into(),
        };
        if self.inner.cancel.is_cancelled() {
            return Err(gone());
        }
        let (sub, _) = self.inner.hub.subscribe(channel);
        // Always ask the subscriber task: SUBSCRIBE is idempotent, and waiting for the server's
        // confirmation is what makes "published after subscribe returned" arrive.
        let (tx, rx) = oneshot::channel();
        self.inner
            .subscribe
            .send((channel.to_owned(), tx))
            .map_err(|_| gone())?;
        match tokio::time::timeout(self.inner.timeout * 2, rx).await {
            Ok(Ok(Ok(()))) => Ok(sub),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(StoreError::Timeout {
                backend,
                millis: self.millis(),
            }),
        }
    }

    async fn time_ms(&self) -> StoreResult<i64> {
        let (secs, micros): (i64, i64) = self
            .run("TIME", self.inner.conn.query(&redis::cmd("TIME")))
            .await?;
        Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
    }

    fn is_ok(&self) -> bool {
        self.inner.health.state(self.inner.timeout).0 == "ok"
    }

    fn status(&self) -> StoreStatus {
        let (state, last_error) = self.inner.health.state(self.inner.timeout);
        StoreStatus {
            backend: self.inner.backend,
            state,
            target: self.inner.target.clone(),
            last_error,
        }
    }
}
