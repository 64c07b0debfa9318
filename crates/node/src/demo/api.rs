//! The demo's calls to the node's services, over HTTP as any client makes them: a training job,
//! the indexer's status, completions and settlements.

use std::time::Duration;

use alloy_primitives::B256;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use openledger_flywheel::jobs::DatanetVersion;
use serde_json::Value;

/// How often a job, an index or a settlement is asked about while the demo waits for it.
const POLL: Duration = Duration::from_millis(200);
/// How long the demo waits for a span index or a settlement before it gives up.
const PATIENCE: Duration = Duration::from_secs(300);

/// The node's HTTP API.
pub struct Api {
    http: reqwest::Client,
    url: String,
}

/// What a finished training job reports.
pub struct Trained {
    /// The job's id, under which the node keeps its log (`GET /jobs/{id}`).
    pub job: u64,
    /// The transaction that paid the trainer for the job's compute.
    pub compute_tx: B256,
    pub rows: usize,
    /// Held-out loss before and after training.
    pub loss: (f64, f64),
}

impl Api {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// Where it listens.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `request`; the JSON answer, or the node's error.
    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .context("the node's API did not answer")?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .context("the node's API sent no JSON")?;
        if !status.is_success() {
            bail!(
                "HTTP {status}: {}",
                body["error"].as_str().unwrap_or("no reason")
            );
        }
        Ok(body)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    /// Submits a training job with API key `key` and follows it to its end with a progress
    /// bar.
    pub async fn train(&self, key: &str, request: &Value) -> anyhow::Result<Trained> {
        let submit = self
            .http
            .post(format!("{}/jobs/train", self.url))
            .bearer_auth(key)
            .json(request);
        let job = self
            .call(submit)
            .await
            .context("the training job was refused")?;
        let id = job["id"].as_u64().context("the job has no id")?;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps  {msg}",
            )
            .expect("valid template"),
        );
        let job = loop {
            let job = self.call(self.get(&format!("/jobs/{id}"))).await?;
            bar.set_length(job["totalSteps"].as_u64().unwrap_or(0));
            bar.set_position(job["step"].as_u64().unwrap_or(0));
            if let Some(loss) = job["losses"].as_array().and_then(|l| l.last()) {
                bar.set_message(format!("loss {:.3}", loss.as_f64().unwrap_or(f64::NAN)));
            }
            // Ended, and its fee paid or refunded.
            let settled = job["payment"]["status"] != "held";
            match job["status"].as_str() {
                Some("queued" | "running") => tokio::time::sleep(POLL).await,
                _ if !settled => tokio::time::sleep(POLL).await,
                _ => break job,
            }
        };
        bar.finish_and_clear();
        if job["status"] != "succeeded" {
            bail!("training job {id} {}: {}", job["status"], job["error"]);
        }
        let loss = |key: &str| job[key].as_f64().unwrap_or(f64::NAN);
        let compute_tx = serde_json::from_value(job["payment"]["settleTx"].clone())
            .with_context(|| format!("training job {id} paid nothing: {}", job["payment"]))?;
        Ok(Trained {
            job: id,
            compute_tx,
            rows: job["trainRows"]
                .as_u64()
                .context("the job counted no rows")? as usize,
            loss: (loss("evalLossBefore"), loss("evalLossAfter")),
        })
    }

    /// Waits until the indexer has built the span index of `at`.
    pub async fn index_ready(&self, at: DatanetVersion) -> anyhow::Result<()> {
        let path = format!("/datanets/{}/versions/{}/index", at.datanet, at.version);
        self.until(&path, |status| match status["status"].as_str() {
            Some("ready") => Ok(true),
            Some("failed") => bail!("the index of {at} failed: {}", status["error"]),
            _ => Ok(false),
        })
        .await
        .with_context(|| format!("the span index of {at}"))
    }

    /// A completion paid for by the signed order in the request's `openledger` field; the
    /// whole answer, which says how it was attributed and settled.
    pub async fn complete(&self, request: &Value) -> anyhow::Result<Value> {
        let post = self
            .http
            .post(format!("{}/v1/completions", self.url))
            .json(request);
        let answer = self
            .call(post)
            .await
            .context("the completion was refused")?;
        if let Some(error) = answer["openledger"].get("error") {
            bail!("the completion was not settled: {error}");
        }
        Ok(answer)
    }

    /// Waits until settlement `id` is on-chain.
    pub async fn settled(&self, id: B256) -> anyhow::Result<()> {
        self.until(&format!("/settlements/{id}"), |s| {
            match s["state"].as_str() {
                Some("pending") => Ok(false),
                Some("failed") => bail!("settlement {id} failed: {}", s["error"]),
                _ => Ok(true),
            }
        })
        .await
    }

    /// Asks `path` until `done` says so, for at most [`PATIENCE`].
    async fn until(
        &self,
        path: &str,
        done: impl Fn(&Value) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // Not found yet: the service has not seen what it will work on.
            let answer = self.call(self.get(path)).await.ok();
            if let Some(answer) = answer
                && done(&answer)?
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("not done after {} s", PATIENCE.as_secs());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
