//! Training jobs: `POST /jobs/train` fine-tunes a LoRA adapter for a model on datanet versions,
//! one job at a time, and registers it on-chain as the model's next artifact version, signed by
//! the dev account the API key stands for (which must be the model's creator). An Approved
//! model gets its first version; a Trained or Deployed one is retrained (a Deployed model goes
//! on serving its current version until its creator deploys it again).
//!
//! The one trainer is shared fairly: the next job is the oldest queued one of the account that
//! started a job least recently, and an account may have at most [`MAX_QUEUED_PER_ACCOUNT`] jobs
//! waiting. `DELETE /jobs/{id}` cancels a job: a queued one at once, a running one after its
//! current step (one whose adapter is being registered finishes). `GET /jobs/{id}` shows the
//! job's log and its times.
//!
//! A job is kept in `<datadir>/jobs/<id>/job.json` and trains into `<datadir>/jobs/<id>/adapter/`
//! (metrics, loss curve and gradient sketches beside the weights); only once the adapter is
//! registered on-chain, and the model's current version, is it copied to
//! `<datadir>/adapters/model-<id>/`, where OpenLoRA serves it (a retrained Deployed model's new
//! version is installed there from the published adapters when it is deployed again). A job is
//! refused at submission unless its model may register an artifact and the caller is its
//! creator, so a registered adapter is never overwritten. A job a crash interrupted runs again
//! on restart: training is deterministic under its seed, and an adapter already registered as
//! the newest version is not registered twice.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use alloy_primitives::{B256, U256};
use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use openledger_ml::factory::{DataOptions, FineTune, LOSS_CURVE_FILE};
use openledger_ml::lora::LoraConfig;
use openledger_ml::train::TrainOptions;
use openledger_primitives::addresses::MODELS;
use openledger_protocol::abi::IModels;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::client::Client;
use crate::compute::{self, Payment, PaymentStatus};
use crate::jobs::{
    DatanetVersion, RowsReader, Untrainable, check_job, file_hash, newest_artifact,
    publish_adapter, register_artifact, versions_rows, write_rows,
};
use crate::shared::{ApiError, Flywheel};

/// What a client asks for; unset options take `openledger train`'s defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TrainRequest {
    model: u64,
    /// `ID@VERSION` for each of the model's datanets.
    datanets: Vec<String>,
    #[serde(default = "default_rank")]
    rank: usize,
    #[serde(default = "default_alpha")]
    alpha: f64,
    #[serde(default = "default_targets")]
    targets: String,
    lr: Option<f64>,
    epochs: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_context")]
    context: usize,
    #[serde(default = "default_influence_dims")]
    influence_dims: usize,
    /// Train over the base kept quantized (`openledger train --qlora`).
    #[serde(default)]
    qlora: bool,
    /// Recompute activations in the backward pass (`--gradient-checkpointing`).
    #[serde(default)]
    gradient_checkpointing: bool,
}

/// Most jobs one account may have waiting: the trainer is shared.
pub const MAX_QUEUED_PER_ACCOUNT: usize = 4;
/// Most log lines a job keeps (the oldest go first).
const MAX_LOG_LINES: usize = 200;

/// Most epochs a job may ask for.
const MAX_EPOCHS: usize = 100;
/// Most optimizer steps a job runs, whatever its epochs and data: the node's one trainer is
/// shared, so no job may hold it for long.
const MAX_JOB_STEPS: usize = 20_000;

impl TrainRequest {
    /// Checks every field before the job is queued; the error names the field.
    fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, field: &str, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{field}: {rule}"))
            }
        };
        check((1..=256).contains(&self.rank), "rank", "from 1 to 256")?;
        check(
            self.alpha.is_finite() && self.alpha > 0.0,
            "alpha",
            "a positive number",
        )?;
        check(
            self.lr
                .is_none_or(|lr| lr.is_finite() && lr > 0.0 && lr <= 1.0),
            "lr",
            "a learning rate above 0 and at most 1",
        )?;
        check(
            self.epochs.is_none_or(|e| (1..=MAX_EPOCHS).contains(&e)),
            "epochs",
            &format!("from 1 to {MAX_EPOCHS}"),
        )?;
        check(
            (8..=4096).contains(&self.context),
            "context",
            "from 8 to 4096 tokens",
        )?;
        check(
            self.influence_dims <= 1 << 16,
            "influenceDims",
            "at most 65536 (0 records no gradient sketches)",
        )
    }
}

fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> String {
    "q,k,v,o".into()
}
fn default_context() -> usize {
    128
}
fn default_influence_dims() -> usize {
    crate::influence::DEFAULT_DIMS
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One line of a job's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogLine {
    /// When (RFC 3339, UTC).
    at: String,
    message: String,
}

/// Now, as jobs write times: RFC 3339 in UTC, to the second.
fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A job as `GET /jobs/{id}` shows it and `job.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    id: u64,
    request: TrainRequest,
    /// The dev account that asked, whose key signs the registration.
    account: usize,
    status: Status,
    step: usize,
    total_steps: usize,
    /// Training loss per step so far: the loss curve.
    losses: Vec<f64>,
    /// Rows trained on (the rest of the versions' rows are held out for the evaluation).
    #[serde(default)]
    train_rows: Option<usize>,
    eval_loss_before: Option<f64>,
    eval_loss_after: Option<f64>,
    adapter: Option<PathBuf>,
    adapter_hash: Option<B256>,
    tx: Option<B256>,
    error: Option<String>,
    /// When it was submitted, started and ended (RFC 3339, UTC).
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    /// Its owner asked to cancel it while it ran: it stops after the current step.
    #[serde(default)]
    cancel_requested: bool,
    /// Its adapter is being registered: too late to cancel.
    #[serde(default)]
    registering: bool,
    /// What happened, line by line.
    #[serde(default)]
    log: Vec<LogLine>,
    /// Its fee: quoted, held from the creator's escrow, then paid or refunded.
    #[serde(default)]
    payment: Option<Payment>,
}

impl Job {
    fn note(&mut self, message: impl Into<String>) {
        if self.log.len() == MAX_LOG_LINES {
            self.log.remove(0);
        }
        self.log.push(LogLine {
            at: now(),
            message: message.into(),
        });
    }

    /// Ends the job with what training and registration came to.
    fn end(&mut self, outcome: anyhow::Result<(B256, Option<B256>)>) {
        match outcome {
            Ok((hash, tx)) => {
                self.adapter_hash = Some(hash);
                self.tx = tx;
                self.finish(
                    Status::Succeeded,
                    format!("succeeded: adapter {hash} is registered"),
                );
            }
            Err(_) if self.cancel_requested => {
                self.finish(
                    Status::Cancelled,
                    format!("cancelled after step {}", self.step),
                );
            }
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                self.finish(Status::Failed, format!("failed: {e:#}"));
            }
        }
    }

    fn finish(&mut self, status: Status, message: impl Into<String>) {
        self.status = status;
        self.finished_at = Some(now());
        self.note(message);
    }
}

/// The job runner.
pub struct Trainer {
    flywheel: Arc<Flywheel>,
    dir: PathBuf,
    jobs: Mutex<BTreeMap<u64, Job>>,
    /// Woken when a job is queued.
    queued: Notify,
    /// For each account, the turn at which it last started a job (a counter).
    turns: Mutex<(u64, HashMap<usize, u64>)>,
}

impl Trainer {
    /// Loads the jobs in `<datadir>/jobs`, queues again those a stop interrupted, and starts the
    /// worker.
    pub fn start(flywheel: Arc<Flywheel>) -> anyhow::Result<Arc<Self>> {
        let dir = flywheel.datadir.join("jobs");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path().join("job.json");
            if let Ok(bytes) = std::fs::read(&path) {
                let job: Job = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is corrupt", path.display()))?;
                jobs.insert(job.id, job);
            }
        }
        let trainer = Arc::new(Self {
            flywheel,
            dir,
            jobs: Mutex::new(jobs),
            queued: Notify::new(),
            turns: Mutex::new((0, HashMap::new())),
        });
        trainer.requeue_interrupted();
        trainer.settle_unsettled();
        let worker = trainer.clone();
        tokio::spawn(async move {
            loop {
                match worker.next_job() {
                    Some(id) => worker.run(id).await,
                    None => worker.queued.notified().await,
                }
            }
        });
        Ok(trainer)
    }

    /// Jobs a stop cut short run again from the start.
    fn requeue_interrupted(&self) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        for job in jobs.values_mut().filter(|j| j.status == Status::Running) {
            if job.cancel_requested {
                job.finish(
                    Status::Cancelled,
                    "cancelled: the node stopped while it ran",
                );
            } else {
                job.status = Status::Queued;
                job.note("the node stopped while this job ran; queued again");
            }
            if let Err(e) = self.save(job) {
                tracing::warn!("cannot save job {}: {e:#}", job.id);
            }
        }
    }

    /// The job to run next: the oldest queued job of the account whose last start is the
    /// longest ago, so that one account's many jobs cannot keep the others' waiting.
    fn next_job(&self) -> Option<u64> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let mut turns = self.turns.lock().expect("turns lock");
        let (turn, last) = &mut *turns;
        let next = jobs
            .values()
            .filter(|j| j.status == Status::Queued)
            .min_by_key(|j| (last.get(&j.account).copied().unwrap_or(0), j.id))?;
        *turn += 1;
        last.insert(next.account, *turn);
        Some(next.id)
    }

    fn job(&self, id: u64) -> Option<Job> {
        self.jobs.lock().expect("jobs lock").get(&id).cloned()
    }

    /// Changes a job in memory, and on disk when `persist` (status changes, not every step);
    /// `None` if there is no such job.
    fn update<R>(&self, id: u64, persist: bool, change: impl FnOnce(&mut Job) -> R) -> Option<R> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let job = jobs.get_mut(&id)?;
        let answer = change(job);
        if persist && let Err(e) = self.save(job) {
            tracing::warn!("cannot save job {id}: {e:#}");
        }
        Some(answer)
    }

    fn save(&self, job: &Job) -> anyhow::Result<()> {
        let dir = self.dir.join(job.id.to_string());
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("job.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(job)?)?;
        std::fs::rename(&tmp, dir.join("job.json"))?;
        Ok(())
    }

    async fn run(self: &Arc<Self>, id: u64) {
        self.update(id, true, |j| {
            j.status = Status::Running;
            j.registering = false;
            j.error = None;
            j.step = 0;
            j.losses.clear();
            j.started_at = Some(now());
            j.note("started");
        });
        let outcome = self.train_and_register(id).await;
        let trained = matches!(outcome, Ok((_, Some(_))));
        self.update(id, true, |j| {
            j.registering = false;
            j.end(outcome)
        });
        self.settle_payment(id, trained).await;
    }

    /// Pays a finished job's held fee to the trainer when it registered a new artifact, or
    /// refunds it; a failure is logged, and tried again at the next start.
    async fn settle_payment(&self, id: u64, trained: bool) {
        let Some(payment) = self.job(id).and_then(|j| j.payment) else {
            return;
        };
        if payment.status != PaymentStatus::Held {
            return;
        }
        match compute::settle(&self.flywheel, payment, trained).await {
            Ok(settled) => {
                let line = format!(
                    "fee {} wei {}",
                    settled.fee,
                    if trained {
                        "paid to the trainer"
                    } else {
                        "refunded to the creator's escrow"
                    }
                );
                self.update(id, true, |j| {
                    j.payment = Some(settled);
                    j.note(line);
                });
            }
            Err(e) => self.note(id, format!("the held fee could not be settled yet: {e:#}")),
        }
    }

    /// Settles the fees of jobs that ended while the node could not (a stop, a failed call).
    fn settle_unsettled(self: &Arc<Self>) {
        let ended: Vec<(u64, bool)> = self
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .filter(|j| !matches!(j.status, Status::Queued | Status::Running))
            .filter(|j| {
                j.payment
                    .as_ref()
                    .is_some_and(|p| p.status == PaymentStatus::Held)
            })
            .map(|j| (j.id, j.status == Status::Succeeded && j.tx.is_some()))
            .collect();
        let trainer = self.clone();
        tokio::spawn(async move {
            for (id, trained) in ended {
                trainer.settle_payment(id, trained).await;
            }
        });
    }

    /// Adds a line to a job's log.
    fn note(&self, id: u64, message: impl Into<String>) {
        self.update(id, true, |j| j.note(message));
    }
    async fn train_and_register(self: &Arc<Self>, id: u64) -> anyhow::Result<(B256, Option<B256>)> {
        let job = self.job(id).context("the job vanished")?;
        let request = &job.request;
        let signer = self.flywheel.accounts[job.account].clone();
        let client = self.flywheel.chain.with_signer(signer);
        let versions = request
            .datanets
            .iter()
            .map(|d| d.parse::<DatanetVersion>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let work = self.dir.join(id.to_string());
        let out = work.join("adapter");
        let model = U256::from(request.model);
        // Registered before a stop cut the job short, but not yet published: publish what was
        // registered rather than train again.
        let newest = newest_artifact(&client, model).await?;
        let weights = out.join(openledger_ml::lora::ADAPTER_WEIGHTS_FILE);
        let trained = weights.is_file().then(|| file_hash(&weights)).transpose()?;
        if let Some(hash) = trained.filter(|hash| Some(*hash) == newest) {
            self.publish(&client, model, &out, &work.join("publishing"))
                .await?;
            self.share(id, &client, model, &out).await;
            return Ok((hash, None));
        }
        // The model may have been retired, or its creator's key changed, while the job waited.
        check_job(&client, model, client.sender()?, &versions).await?;
        // Read as the creator, for the model: a private datanet's rows need its access grant.
        let reader = RowsReader::Signer { model: Some(model) };
        let rows = versions_rows(&client, (&self.flywheel.api_url, &reader), &versions).await?;
        self.note(
            id,
            format!(
                "read {} rows of {}",
                rows.len(),
                request.datanets.join(", ")
            ),
        );
        let data = work.join("datanet-rows.jsonl");
        write_rows(&rows, &data)?;
        // Trained in the job's own folder: the served folder gets it only once registered.
        let fine_tune = FineTune {
            base: self.flywheel.base.path().await?,
            data: DataOptions {
                files: vec![data],
                eval_split: 0.1,
                context: request.context,
            },
            out: out.clone(),
            lora: LoraConfig::new(request.rank, request.alpha, &request.targets)?,
            train: TrainOptions {
                lr: request.lr.unwrap_or(TrainOptions::default().lr),
                epochs: request.epochs.unwrap_or(TrainOptions::default().epochs),
                seed: request.seed,
                max_steps: Some(MAX_JOB_STEPS),
                gradient_checkpointing: request.gradient_checkpointing,
                ..TrainOptions::default()
            },
            qlora: request.qlora,
        };
        let dims = request.influence_dims;
        let trainer = self.clone();
        let metrics = tokio::task::spawn_blocking(move || {
            let metrics = fine_tune.run(&mut |p| {
                let cancelled = trainer.update(id, false, |j| {
                    j.step = p.step;
                    j.total_steps = p.total_steps;
                    j.losses.push(p.loss);
                    if p.step == 1 || p.step == p.total_steps || p.step % 100 == 0 {
                        j.note(format!(
                            "step {}/{}: loss {:.4}",
                            p.step, p.total_steps, p.loss
                        ));
                    }
                    j.cancel_requested
                });
                match cancelled {
                    Some(false) => ControlFlow::Continue(()),
                    _ => ControlFlow::Break(()),
                }
            })?;
            if dims > 0 {
                crate::influence::record(&fine_tune, dims, true)?;
            }
            anyhow::Ok(metrics)
        })
        .await??;
        let cancelled = self.update(id, true, |j| {
            j.train_rows = Some(metrics.train_rows);
            j.eval_loss_before = metrics.eval_before.as_ref().map(|e| e.loss);
            j.eval_loss_after = metrics.eval_after.as_ref().map(|e| e.loss);
            j.adapter = Some(out.clone());
            if let (Some(before), Some(after)) = (j.eval_loss_before, j.eval_loss_after) {
                j.note(format!(
                    "held-out loss {before:.4} before training, {after:.4} after"
                ));
            }
            // Checked and closed in one step: a cancellation after this answers 409.
            j.registering = !j.cancel_requested;
            j.cancel_requested
        });
        if cancelled != Some(false) {
            anyhow::bail!("cancelled before its adapter was registered");
        }
        let ours = file_hash(&weights)?;
        let outcome = if newest_artifact(&client, model).await? == Some(ours) {
            // Registered before a crash cut the job short, or the same weights trained again.
            self.note(
                id,
                "this adapter is the model's newest artifact version already",
            );
            (ours, None)
        } else {
            self.note(
                id,
                "registering the adapter as the model's next artifact version",
            );
            let registered = register_artifact(&client, model, &out, &versions).await?;
            let tx = registered.receipt.transaction_hash;
            self.note(
                id,
                format!(
                    "registered in transaction {tx} as {}",
                    registered.next_step(model)
                ),
            );
            (ours, Some(tx))
        };
        self.publish(&client, model, &out, &work.join("publishing"))
            .await?;
        self.share(id, &client, model, &out).await;
        Ok(outcome)
    }

    /// Publishes the registered adapter to the content API, for other folders and nodes that
    /// serve the model; a failure goes in the job's log and does not fail the job (the adapter
    /// is registered, and served here).
    async fn share(&self, id: u64, client: &Client, model: U256, adapter: &std::path::Path) {
        let note = match publish_adapter(client, &self.flywheel.api_url, model, adapter).await {
            Ok(published) if published.left_out.is_empty() => "published by its hash".to_string(),
            Ok(published) => format!(
                "published by its hash without {} (over the content API's size limit)",
                published.left_out.join(", ")
            ),
            Err(e) => format!(
                "not published ({e:#}): `openledger model publish {model} --adapter DIR` does it"
            ),
        };
        self.note(id, note);
    }

    /// Puts a registered adapter where OpenLoRA serves it, if it is the model's current version
    /// (a Deployed model serves its earlier one until deployed again): copied to `staging` (on
    /// the same file system, outside the adapters folder), then renamed into place, so the
    /// served folder is never half written.
    async fn publish(
        &self,
        client: &Client,
        model: U256,
        adapter: &std::path::Path,
        staging: &std::path::Path,
    ) -> anyhow::Result<()> {
        let current = client
            .view(MODELS, &IModels::getModelCall { modelId: model })
            .await?
            .adapterHash;
        if file_hash(&adapter.join(openledger_ml::lora::ADAPTER_WEIGHTS_FILE))? != current {
            return Ok(());
        }
        let served = self.flywheel.adapter_dir(model);
        let parent = served.parent().context("the adapters folder")?;
        std::fs::create_dir_all(parent)?;
        let _ = std::fs::remove_dir_all(staging);
        std::fs::create_dir_all(staging)?;
        for entry in std::fs::read_dir(adapter)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::copy(entry.path(), staging.join(entry.file_name()))?;
            }
        }
        // A folder from a job that never registered (older versions trained in place).
        let _ = std::fs::remove_dir_all(&served);
        std::fs::rename(staging, &served)
            .with_context(|| format!("cannot publish the adapter to {}", served.display()))
    }

    /// Refuses a job of `account`'s when it has [`MAX_QUEUED_PER_ACCOUNT`] waiting already,
    /// before any fee is held.
    fn room_for(&self, account: usize) -> Result<(), ApiError> {
        let waiting = self
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .filter(|j| j.account == account && j.status == Status::Queued)
            .count();
        if waiting >= MAX_QUEUED_PER_ACCOUNT {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "dev-{account} has {waiting} jobs waiting, the most an account may: wait for \
                     one to start, or cancel one (DELETE /jobs/ID)"
                ),
            ));
        }
        Ok(())
    }

    /// The job's quote: its fee at this node's price for the tokens of the rows it reads.
    async fn quote(
        &self,
        request: &TrainRequest,
        account: usize,
        versions: &[DatanetVersion],
    ) -> Result<Payment, ApiError> {
        let creator = self
            .flywheel
            .chain
            .with_signer(self.flywheel.accounts[account].clone());
        let epochs = request.epochs.unwrap_or(TrainOptions::default().epochs);
        let model = (U256::from(request.model), versions);
        compute::quote(
            &self.flywheel,
            &creator,
            model,
            (epochs, request.context, MAX_JOB_STEPS),
        )
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, format!("cannot quote the job: {e:#}")))
    }

    /// Holds a quoted fee from the creator's escrow before the job is queued: 402 when the
    /// escrow (less what is unlocking) cannot cover it.
    async fn hold(
        &self,
        account: usize,
        model: u64,
        payment: Payment,
    ) -> Result<Payment, ApiError> {
        let creator = &self.flywheel.accounts[account];
        let fee = payment.fee.clone();
        compute::hold(&self.flywheel, creator, U256::from(model), payment)
            .await
            .map_err(|e| {
                let message = format!("{e:#}");
                if message.contains("InsufficientEscrow") {
                    ApiError(
                        StatusCode::PAYMENT_REQUIRED,
                        format!(
                            "the job costs {} OPEN ({fee} wei), held from the escrow of dev-{account} \
                             (the model's creator; less what is unlocking) before it is queued: \
                             {message}; deposit first (openledger settle deposit AMOUNT --account \
                             {account}), or cancel an unlock (openledger settle unlock 0 --account \
                             {account})",
                            fee.parse::<U256>()
                                .map_or_else(|_| fee.clone(), openledger_primitives::format_open)
                        ),
                    )
                } else {
                    ApiError(StatusCode::SERVICE_UNAVAILABLE, message)
                }
            })
    }

    /// Refuses at submission what the chain would refuse after training: a model that cannot
    /// take a new artifact version (Proposed, Retired, Slashed), an account that is not its
    /// creator, datanet versions that do not match its datanets, a model without access to them.
    async fn may_train(
        &self,
        model: u64,
        account: usize,
        versions: &[DatanetVersion],
    ) -> Result<(), ApiError> {
        let unavailable =
            |e: anyhow::Error| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"));
        let client = &self.flywheel.chain;
        let count = client
            .view(MODELS, &IModels::modelCountCall {})
            .await
            .map_err(unavailable)?;
        if model == 0 || U256::from(model) > count {
            return Err(ApiError::not_found(format!("model {model} does not exist")));
        }
        let caller = self.flywheel.accounts[account].address();
        check_job(client, U256::from(model), caller, versions)
            .await
            .map_err(|e| {
                let status = match e {
                    Untrainable::Status(..) => StatusCode::CONFLICT,
                    Untrainable::NotCreator { .. } => StatusCode::FORBIDDEN,
                    Untrainable::Datanets(_) => StatusCode::BAD_REQUEST,
                    Untrainable::NoAccess { .. } => StatusCode::PAYMENT_REQUIRED,
                    Untrainable::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                };
                ApiError(status, e.to_string())
            })?;
        Ok(())
    }

    /// The routes of the job API.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/jobs/train", post(submit))
            .route("/jobs", get(list))
            .route("/jobs/{id}", get(show).delete(cancel))
            .route("/jobs/{id}/loss_curve.svg", get(loss_curve))
            .with_state(self)
    }
}

async fn submit(
    State(trainer): State<Arc<Trainer>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    let account = trainer.flywheel.account(&headers)?;
    let request: TrainRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid training request: {e}")))?;
    if request.datanets.is_empty() {
        return Err(ApiError::bad_request(
            "datanets: give ID@VERSION for each of the model's datanets",
        ));
    }
    let versions = request
        .datanets
        .iter()
        .map(|d| d.parse::<DatanetVersion>().map_err(ApiError::bad_request))
        .collect::<Result<Vec<_>, _>>()?;
    request.validate().map_err(ApiError::bad_request)?;
    LoraConfig::new(request.rank, request.alpha, &request.targets)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    trainer.may_train(request.model, account, &versions).await?;
    // Anything but `?quote` may be a typo of it: refused before any fee is held.
    let quote_only = match query.as_deref() {
        None | Some("") => false,
        Some("quote") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown query {other:?}: POST /jobs/train?quote prices a job without queuing it"
            )));
        }
    };
    trainer.room_for(account)?;
    let payment = trainer.quote(&request, account, &versions).await?;
    if quote_only {
        return Ok((StatusCode::OK, Json(payment)).into_response());
    }
    // Held before the job is recorded; the job keeps the hold whatever happens next (a job
    // submitted meanwhile may take the account past its limit by one, never lose a fee).
    let payment = trainer.hold(account, request.model, payment).await?;
    let job = {
        let mut jobs = trainer.jobs.lock().expect("jobs lock");
        let id = jobs.keys().next_back().map_or(1, |last| last + 1);
        let mut job = Job {
            id,
            request,
            account,
            status: Status::Queued,
            step: 0,
            total_steps: 0,
            losses: Vec::new(),
            train_rows: None,
            eval_loss_before: None,
            eval_loss_after: None,
            adapter: None,
            adapter_hash: None,
            tx: None,
            error: None,
            created_at: Some(now()),
            started_at: None,
            finished_at: None,
            cancel_requested: false,
            registering: false,
            log: Vec::new(),
            payment: Some(payment),
        };
        job.note(format!("queued by dev-{account}"));
        trainer
            .save(&job)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        jobs.insert(id, job.clone());
        job
    };
    trainer.queued.notify_one();
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// `DELETE /jobs/{id}`: by the account that submitted it. A queued job is cancelled at once
/// (200), a running one after its current step (202; its status says when); a finished one
/// cannot be (409).
async fn cancel(
    State(trainer): State<Arc<Trainer>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    let account = trainer.flywheel.account(&headers)?;
    let outcome = trainer.update(id, true, |job| {
        if job.account != account {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "job {id} is dev-{}'s: only that account cancels it",
                    job.account
                ),
            ));
        }
        let code = match job.status {
            Status::Queued => {
                job.finish(Status::Cancelled, "cancelled before it started");
                StatusCode::OK
            }
            Status::Running if job.registering => {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "job {id} is registering its adapter on-chain: too late to cancel; it \
                         ends succeeded or failed"
                    ),
                ));
            }
            Status::Running => {
                job.cancel_requested = true;
                job.note("cancellation asked: the job stops after its current step");
                StatusCode::ACCEPTED
            }
            done => {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("job {id} has ended ({done:?}): there is nothing to cancel"),
                ));
            }
        };
        Ok((code, Json(job.clone())))
    });
    let answer = outcome.ok_or_else(|| ApiError::not_found(format!("no job {id}")))??;
    if answer.0 == StatusCode::OK {
        // Cancelled before it started: its held fee goes back.
        trainer.settle_payment(id, false).await;
        let job = trainer
            .job(id)
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        return Ok((StatusCode::OK, Json(job)));
    }
    Ok(answer)
}

async fn list(State(trainer): State<Arc<Trainer>>) -> Json<Vec<Job>> {
    Json(
        trainer
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect(),
    )
}

async fn show(
    State(trainer): State<Arc<Trainer>>,
    Path(id): Path<u64>,
) -> Result<Json<Job>, ApiError> {
    trainer
        .job(id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

async fn loss_curve(
    State(trainer): State<Arc<Trainer>>,
    Path(id): Path<u64>,
) -> Result<impl IntoResponse, ApiError> {
    let job = trainer
        .job(id)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let svg = job
        .adapter
        .and_then(|dir| std::fs::read(dir.join(LOSS_CURVE_FILE)).ok())
        .ok_or_else(|| ApiError::not_found(format!("job {id} has no loss curve yet")))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;
    use crate::testing::{TestChain, base_model, content_api};

    /// Sends `request` to the job API as dev account `account`; the status and JSON body.
    async fn call(
        trainer: &Arc<Trainer>,
        request: axum::http::request::Builder,
        account: usize,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let request = request
            .header(header::AUTHORIZATION, format!("Bearer dev-{account}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let response = trainer.clone().router().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Submits a small job for `model` on `datanet@1` and waits for its end.
    async fn train(
        trainer: &Arc<Trainer>,
        model: U256,
        datanet: U256,
        seed: u64,
    ) -> serde_json::Value {
        let job = serde_json::json!({"model": model.to::<u64>(), "datanets": [format!("{datanet}@1")],
                                     "rank": 2, "targets": "q", "epochs": 1, "context": 16, "seed": seed});
        let (status, accepted) =
            call(trainer, axum::http::Request::post("/jobs/train"), 2, job).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let url = format!("/jobs/{}", accepted["id"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let (_, job) = call(
                trainer,
                axum::http::Request::get(&url),
                2,
                serde_json::json!({}),
            )
            .await;
            if job["status"] != "queued" && job["status"] != "running" {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "never ended: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_job_trains_registers_each_version_and_serves_only_the_current_one() {
        let tc = TestChain::start(4);
        let dir = tempfile::tempdir().unwrap();
        base_model(&dir.path().join("base"));
        let flywheel = tc.flywheel(dir.path(), &content_api().await);
        let (datanet, _) = tc.datanet().await;
        let model = tc.approved_model(datanet).await;
        let trainer = Trainer::start(flywheel.clone()).unwrap();
        let info = || async {
            tc.client
                .view(MODELS, &IModels::getModelCall { modelId: model })
                .await
                .unwrap()
        };
        let served = || {
            file_hash(
                &flywheel
                    .adapter_dir(model)
                    .join(openledger_ml::lora::ADAPTER_WEIGHTS_FILE),
            )
            .unwrap()
        };

        let first = train(&trainer, model, datanet, 1).await;
        assert_eq!(first["status"], "succeeded", "{first}");
        let m = info().await;
        assert_eq!((m.status, m.artifactVersion), (IModels::Status::Trained, 1));
        assert_eq!(serde_json::json!(m.adapterHash), first["adapterHash"]);
        assert_eq!(served(), m.adapterHash);

        // Trained again before deployment: version 2 becomes the current one, and is served.
        let second = train(&trainer, model, datanet, 2).await;
        assert_eq!(second["status"], "succeeded", "{second}");
        let m = info().await;
        assert_eq!((m.artifactVersion, m.artifactCount), (2, 2));
        assert_ne!(serde_json::json!(m.adapterHash), first["adapterHash"]);
        assert_eq!(served(), m.adapterHash);

        // The same weights again (same seed): nothing to register.
        let again = train(&trainer, model, datanet, 2).await;
        assert_eq!(again["status"], "succeeded", "{again}");
        assert_eq!(again["tx"], serde_json::Value::Null);
        assert_eq!(info().await.artifactCount, 2);

        // Only the creator trains it.
        let job =
            serde_json::json!({"model": model.to::<u64>(), "datanets": [format!("{datanet}@1")]});
        let (status, refused) =
            call(&trainer, axum::http::Request::post("/jobs/train"), 1, job).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    }
}
