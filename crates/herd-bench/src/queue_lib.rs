//! The queue bench's calls through the `herd-services` library in this process: no HTTP hop,
//! the store reached directly (BullMQ's own shape: a library in the app process over Redis).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use herd_services::queue::{AckRequest, NewJob, Reserved};
use herd_services::{Services, ServicesConfig, SystemClock};
use herd_store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::queue::{job_data, Held, QueueClient};

const LEASE: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct LibQueue(Arc<Services>);

/// Parses `--store`: `redis://HOST:PORT` or `embedded:PATH`.
pub(crate) fn store_options(spec: &str) -> anyhow::Result<StoreOptions> {
    if spec.starts_with("redis://") {
        return Ok(StoreOptions::Redis {
            urls: vec![spec.to_owned()],
            cluster: false,
            timeout: Duration::from_secs(5),
        });
    }
    if let Some(path) = spec.strip_prefix("embedded:") {
        if !path.is_empty() {
            return Ok(StoreOptions::Embedded { path: path.into() });
        }
    }
    bail!("--store {spec:?}: expected redis://HOST:PORT or embedded:PATH")
}

impl LibQueue {
    pub(crate) async fn open(spec: &str) -> anyhow::Result<(LibQueue, CancellationToken)> {
        let store = Store::open(&store_options(spec)?)
            .await
            .with_context(|| format!("opening the store {spec}"))?;
        let stop = CancellationToken::new();
        let services = Services::start(
            Arc::new(store),
            ServicesConfig::default(),
            Arc::new(SystemClock),
            stop.clone(),
        );
        Ok((LibQueue(services), stop))
    }

    /// Stops the services' background tasks and closes the store.
    pub(crate) async fn close(&self, stop: &CancellationToken) {
        stop.cancel();
        self.0.closed().await;
        self.0.store().shutdown().await;
    }
}

fn held(jobs: Vec<Reserved>) -> Vec<Held> {
    jobs.into_iter()
        .map(|j| Held {
            id: j.id,
            token: j.lease_token,
        })
        .collect()
}

impl QueueClient for LibQueue {
    async fn add(&self, queue: &str, first: u64, end: u64) -> anyhow::Result<()> {
        let job = |i: u64| NewJob {
            keep_completed: herd_services::queue::Keep::NONE,
            ..NewJob::new("job", job_data(i))
        };
        if end - first == 1 {
            self.0.queues.add(queue, job(first)).await?;
        } else {
            self.0
                .queues
                .add_bulk(queue, (first..end).map(job).collect())
                .await?;
        }
        Ok(())
    }

    async fn reserve(&self, queue: &str, max: u32) -> anyhow::Result<Vec<Held>> {
        let jobs = self
            .0
            .queues
            .reserve(queue, max as usize, Some(LEASE), WAIT)
            .await?;
        Ok(held(jobs))
    }

    async fn ack(&self, queue: &str, job: Held, next: Option<u32>) -> anyhow::Result<Vec<Held>> {
        let q = &self.0.queues;
        match next {
            Some(max) => {
                let got = q
                    .ack_and_reserve(queue, &job.id, &job.token, None, max as usize, Some(LEASE))
                    .await?;
                Ok(held(got))
            }
            None => {
                q.ack(queue, &job.id, &job.token, None).await?;
                Ok(Vec::new())
            }
        }
    }

    async fn ack_many(
        &self,
        queue: &str,
        jobs: Vec<Held>,
        next: Option<u32>,
    ) -> anyhow::Result<Vec<Held>> {
        let acks = jobs
            .into_iter()
            .map(|j| AckRequest {
                id: j.id,
                lease_token: j.token,
                result: None,
            })
            .collect();
        let q = &self.0.queues;
        let (outcomes, got) = match next {
            Some(max) => {
                q.ack_many_and_reserve(queue, acks, max as usize, Some(LEASE))
                    .await?
            }
            None => (q.ack_many(queue, acks).await?, Vec::new()),
        };
        if let Some(e) = outcomes.into_iter().find_map(Result::err) {
            bail!("an ack of a batch failed: {e}");
        }
        Ok(held(got))
    }
}
