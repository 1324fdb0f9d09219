//! The queue bench's calls over the services API (HTTP/JSON, keep-alive connections).

use anyhow::{bail, Context};
use http::Method;
use serde_json::{json, Value};

use crate::client::Api;
use crate::queue::{job_data, Held, QueueClient};

#[derive(Clone)]
pub(crate) struct HttpQueue(pub(crate) Api);

fn held(answer: &Value) -> anyhow::Result<Vec<Held>> {
    let Some(jobs) = answer["jobs"].as_array() else {
        return Ok(Vec::new());
    };
    jobs.iter()
        .map(|j| {
            Ok(Held {
                id: j["id"].as_str().context("job without id")?.to_owned(),
                token: j["lease_token"]
                    .as_str()
                    .context("job without lease_token")?
                    .to_owned(),
            })
        })
        .collect()
}

fn next_body(next: Option<u32>) -> Option<Value> {
    next.map(|max| json!({"max": max, "lease": "30s"}))
}

impl QueueClient for HttpQueue {
    async fn add(&self, queue: &str, first: u64, end: u64) -> anyhow::Result<()> {
        let job = |i: u64| json!({"name": "job", "data": job_data(i), "remove_on_complete": true});
        let body = if end - first == 1 {
            job(first)
        } else {
            json!({ "jobs": (first..end).map(job).collect::<Vec<_>>() })
        };
        let path = format!("/v1/queues/{queue}/jobs");
        self.0.json(Method::POST, &path, Some(&body)).await?;
        Ok(())
    }

    async fn reserve(&self, queue: &str, max: u32) -> anyhow::Result<Vec<Held>> {
        let body = json!({"max": max, "lease": "30s", "wait": "1s"});
        let path = format!("/v1/queues/{queue}/reserve");
        held(&self.0.json(Method::POST, &path, Some(&body)).await?)
    }

    async fn ack(&self, queue: &str, job: Held, next: Option<u32>) -> anyhow::Result<Vec<Held>> {
        let mut body = json!({"lease_token": job.token});
        if let Some(n) = next_body(next) {
            body["next"] = n;
        }
        let path = format!("/v1/queues/{queue}/jobs/{}/ack", job.id);
        held(&self.0.json(Method::POST, &path, Some(&body)).await?)
    }

    async fn ack_many(
        &self,
        queue: &str,
        jobs: Vec<Held>,
        next: Option<u32>,
    ) -> anyhow::Result<Vec<Held>> {
        let acks: Vec<_> = jobs
            .into_iter()
            .map(|j| json!({"id": j.id, "lease_token": j.token}))
            .collect();
        let mut body = json!({ "acks": acks });
        if let Some(n) = next_body(next) {
            body["next"] = n;
        }
        let path = format!("/v1/queues/{queue}/ack");
        let got = self.0.json(Method::POST, &path, Some(&body)).await?;
        let failed = got["errors"].as_array().map_or(0, Vec::len);
        if failed > 0 {
            bail!("{failed} acks of a batch failed: {}", got["errors"]);
        }
        held(&got)
    }
}
