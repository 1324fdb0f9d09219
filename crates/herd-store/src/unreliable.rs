//! [`Unreliable`]: a store wrapper that fails on purpose, for fault tests (after neon's
//! `UnreliableWrapper`). Knobs: fail the next N calls, fail each call with a seeded probability,
//! add latency to every call, or be down (every call `Unavailable`) until switched up again.
//! Injected failures are `StoreError::Injected` (retryable); "down" is `Unavailable`, exactly what
//! a lost connection gives, so callers' fallback paths run as they would in production.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Backend, Store, StoreError, StoreResult, StoreStatus};

/// The failure-injecting wrapper. Clones share the knobs.
#[derive(Clone)]
pub struct Unreliable {
    inner: Store,
    knobs: Arc<Mutex<Knobs>>,
}

struct Knobs {
    fail_next: u64,
    probability: f64,
    rng: StdRng,
    latency: Duration,
    down: bool,
    injected: u64,
    calls: u64,
}

impl Unreliable {
    /// Wraps `store` with every knob off. Wrapping a wrapper wraps its inner store instead.
    #[must_use]
    pub fn new(store: Store) -> Unreliable {
        let inner = match store {
            Store::Unreliable(u) => u.inner,
            other => other,
        };
        let knobs = Knobs {
            fail_next: 0,
            probability: 0.0,
            rng: StdRng::seed_from_u64(0),
            latency: Duration::ZERO,
            down: false,
            injected: 0,
            calls: 0,
        };
        Unreliable {
            inner,
            knobs: Arc::new(Mutex::new(knobs)),
        }
    }

    /// `Store::Unreliable` around `store`; reach the knobs with [`Store::unreliable`].
    #[must_use]
    pub fn wrap(store: Store) -> Store {
        Store::Unreliable(Box::new(Unreliable::new(store)))
    }

    /// The next `n` calls fail with `Injected`.
    pub fn fail_next(&self, n: u64) {
        self.knobs.lock().unwrap().fail_next = n;
    }

    /// Each call fails with probability `p` (0..=1), drawn from an RNG seeded with `seed` so a
    /// test replays the same failures.
    pub fn fail_with_probability(&self, p: f64, seed: u64) {
        let mut k = self.knobs.lock().unwrap();
        k.probability = p.clamp(0.0, 1.0);
        k.rng = StdRng::seed_from_u64(seed);
    }

    /// Every call waits this long before it runs.
    pub fn set_latency(&self, latency: Duration) {
        self.knobs.lock().unwrap().latency = latency;
    }

    /// While down, every call fails with `Unavailable` and status says `down`.
    pub fn set_down(&self, down: bool) {
        self.knobs.lock().unwrap().down = down;
    }

    /// How many failures have been injected so far (down included).
    #[must_use]
    pub fn injected(&self) -> u64 {
        self.knobs.lock().unwrap().injected
    }

    /// How many calls reached the wrapper so far (failed ones included): for tests of how
    /// many store round trips an operation takes.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.knobs.lock().unwrap().calls
    }

    pub(crate) fn inner(&self) -> &Store {
        &self.inner
    }

    /// Decides this call's fate: latency first, then down, then fail-next, then chance.
    pub(crate) async fn before_call(&self) -> StoreResult<()> {
        let latency = self.knobs.lock().unwrap().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut guard = self.knobs.lock().unwrap();
        let k = &mut *guard;
        k.calls += 1;
        let err = if k.down {
            Some(StoreError::Unavailable {
                backend: self.inner.status().backend,
                reason: "injected: store is down".into(),
            })
        } else if k.fail_next > 0 {
            k.fail_next -= 1;
            Some(StoreError::Injected("fail_next".into()))
        } else if k.probability > 0.0 && k.rng.random_bool(k.probability) {
            Some(StoreError::Injected(format!(
                "random failure (p = {})",
                k.probability
            )))
        } else {
            None
        };
        match err {
            Some(e) => {
                k.injected += 1;
                Err(e)
            }
            None => Ok(()),
        }
    }

    pub(crate) fn status(&self) -> StoreStatus {
        let mut s = self.inner.status();
        if self.knobs.lock().unwrap().down {
            s.state = "down";
            s.last_error = Some("injected: store is down".into());
        }
        s
    }
}
