//! Training jobs: `POST /jobs/train` fine-tunes a LoRA adapter for an Approved model on datanet
//! versions, one job at a time, and registers it on-chain as the model's artifact, signed by the
//! dev account the API key stands for (which must be the model's creator).
//!
//! A job is kept in `<datadir>/jobs/<id>/job.json` and trains into `<datadir>/jobs/<id>/adapter/`
//! (metrics, loss curve and gradient sketches beside the weights); only once the adapter is
//! registered on-chain is it copied to `<datadir>/adapters/model-<id>/`, where OpenLoRA serves
//! it. A job is refused at submission unless its model is Approved and the caller its creator,
//! so a registered adapter is never overwritten. A job a crash interrupted runs again on
//! restart: training is deterministic under its seed, and an artifact already registered with the
//! same adapter is not registered twice.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use alloy_primitives::{B256, U256};
use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Path, State},
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
use tokio::sync::mpsc;

use super::{ApiError, Flywheel};
use crate::cli::Client;
use crate::jobs::{DatanetVersion, file_hash, register_artifact, versions_rows, write_rows};

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
}

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
    crate::attribution::influence::DEFAULT_DIMS
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Queued,
    Running,
    Succeeded,
    Failed,
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
    eval_loss_before: Option<f64>,
    eval_loss_after: Option<f64>,
    adapter: Option<PathBuf>,
    adapter_hash: Option<B256>,
    tx: Option<B256>,
    error: Option<String>,
}

/// The job runner.
pub struct Trainer {
    flywheel: Arc<Flywheel>,
    dir: PathBuf,
    jobs: Mutex<BTreeMap<u64, Job>>,
    queue: mpsc::UnboundedSender<u64>,
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
        let (queue, mut next) = mpsc::unbounded_channel();
        for job in jobs
            .values()
            .filter(|j| matches!(j.status, Status::Queued | Status::Running))
        {
            queue.send(job.id).expect("the receiver is alive");
        }
        let trainer = Arc::new(Self {
            flywheel,
            dir,
            jobs: Mutex::new(jobs),
            queue,
        });
        let worker = trainer.clone();
        tokio::spawn(async move {
            while let Some(id) = next.recv().await {
                worker.run(id).await;
            }
        });
        Ok(trainer)
    }

    fn job(&self, id: u64) -> Option<Job> {
        self.jobs.lock().expect("jobs lock").get(&id).cloned()
    }

    /// Changes a job in memory, and on disk when `persist` (status changes, not every step).
    fn update(&self, id: u64, persist: bool, change: impl FnOnce(&mut Job)) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let Some(job) = jobs.get_mut(&id) else { return };
        change(job);
        if persist && let Err(e) = self.save(job) {
            tracing::warn!("cannot save job {id}: {e:#}");
        }
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
            j.error = None;
            j.step = 0;
            j.losses.clear();
        });
        let outcome = self.train_and_register(id).await;
        self.update(id, true, |j| match outcome {
            Ok((hash, tx)) => {
                j.status = Status::Succeeded;
                j.adapter_hash = Some(hash);
                j.tx = tx;
            }
            Err(e) => {
                j.status = Status::Failed;
                j.error = Some(format!("{e:#}"));
            }
        });
    }

    async fn train_and_register(self: &Arc<Self>, id: u64) -> anyhow::Result<(B256, Option<B256>)> {
        let job = self.job(id).context("the job vanished")?;
        let request = &job.request;
        let signer = self.flywheel.accounts[job.account].clone();
        let client = Client::new(&self.flywheel.rpc_url, Some(signer))?;
        let versions = request
            .datanets
            .iter()
            .map(|d| d.parse::<DatanetVersion>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let work = self.dir.join(id.to_string());
        let out = work.join("adapter");
        let model = U256::from(request.model);
        // Registered before a stop cut the job short, but not yet published: publish what was
        // registered rather than train again (which could not register a second adapter).
        let registered = client
            .view(MODELS, &IModels::getModelCall { modelId: model })
            .await?
            .adapterHash;
        let weights = out.join(openledger_ml::lora::ADAPTER_WEIGHTS_FILE);
        if weights.is_file() && file_hash(&weights)? == registered {
            self.publish(model, &out, &work.join("publishing"))?;
            return Ok((registered, None));
        }
        let rows = versions_rows(&client, &self.flywheel.api_url, &versions).await?;
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
                ..TrainOptions::default()
            },
        };
        let dims = request.influence_dims;
        let trainer = self.clone();
        let metrics = tokio::task::spawn_blocking(move || {
            let metrics = fine_tune.run(&mut |p| {
                trainer.update(id, false, |j| {
                    j.step = p.step;
                    j.total_steps = p.total_steps;
                    j.losses.push(p.loss);
                });
            })?;
            if dims > 0 {
                crate::attribution::influence::record(&fine_tune, dims, true)?;
            }
            anyhow::Ok(metrics)
        })
        .await??;
        self.update(id, true, |j| {
            j.eval_loss_before = metrics.eval_before.as_ref().map(|e| e.loss);
            j.eval_loss_after = metrics.eval_after.as_ref().map(|e| e.loss);
            j.adapter = Some(out.clone());
        });
        let registered = client
            .view(MODELS, &IModels::getModelCall { modelId: model })
            .await?;
        let ours = file_hash(&weights)?;
        let outcome = if registered.adapterHash == ours {
            // Registered before a crash cut the job short: done already.
            (ours, None)
        } else {
            let (hash, receipt) = register_artifact(&client, model, &out, &versions).await?;
            (hash, Some(receipt.transaction_hash))
        };
        self.publish(model, &out, &work.join("publishing"))?;
        Ok(outcome)
    }

    /// Puts a registered adapter where OpenLoRA serves it: copied to `staging` (on the same file
    /// system, outside the adapters folder), then renamed into place, so the served folder is
    /// never half written.
    fn publish(
        &self,
        model: U256,
        adapter: &std::path::Path,
        staging: &std::path::Path,
    ) -> anyhow::Result<()> {
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

    /// Refuses at submission what the chain would refuse after training: a model that is not
    /// Approved (a Trained or Deployed model's adapter is registered and served, and is never
    /// overwritten), or an account that is not its creator.
    async fn may_train(
        &self,
        model: u64,
        account: usize,
        versions: &[DatanetVersion],
    ) -> Result<(), ApiError> {
        let unavailable =
            |e: anyhow::Error| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}"));
        let client = Client::new(&self.flywheel.rpc_url, None).map_err(unavailable)?;
        let count = client
            .view(MODELS, &IModels::modelCountCall {})
            .await
            .map_err(unavailable)?;
        if model == 0 || U256::from(model) > count {
            return Err(ApiError::not_found(format!("model {model} does not exist")));
        }
        let info = client
            .view(
                MODELS,
                &IModels::getModelCall {
                    modelId: U256::from(model),
                },
            )
            .await
            .map_err(unavailable)?;
        if info.status != IModels::Status::Approved {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "model {model} is {:?}: only an Approved model is trained; a registered \
                     adapter is never overwritten",
                    info.status
                ),
            ));
        }
        crate::jobs::model_versions(U256::from(model), &info.datanetIds, versions)
            .map_err(|e| ApiError::bad_request(format!("datanets: {e:#}")))?;
        let caller = self.flywheel.accounts[account].address();
        if info.creator != caller {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "{caller} is not model {model}'s creator {}: only the creator registers its \
                     adapter",
                    info.creator
                ),
            ));
        }
        Ok(())
    }

    /// The routes of the job API.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/jobs/train", post(submit))
            .route("/jobs", get(list))
            .route("/jobs/{id}", get(show))
            .route("/jobs/{id}/loss_curve.svg", get(loss_curve))
            .with_state(self)
    }
}

async fn submit(
    State(trainer): State<Arc<Trainer>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
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
    let job = {
        let mut jobs = trainer.jobs.lock().expect("jobs lock");
        let id = jobs.keys().next_back().map_or(1, |last| last + 1);
        let job = Job {
            id,
            request,
            account,
            status: Status::Queued,
            step: 0,
            total_steps: 0,
            losses: Vec::new(),
            eval_loss_before: None,
            eval_loss_after: None,
            adapter: None,
            adapter_hash: None,
            tx: None,
            error: None,
        };
        trainer
            .save(&job)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
        jobs.insert(id, job.clone());
        job
    };
    trainer.queue.send(job.id).expect("the worker is alive");
    Ok((StatusCode::ACCEPTED, Json(job)))
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
