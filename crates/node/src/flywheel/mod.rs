//! The AI services of `openledger dev`, each on its own task and each reaching the chain through
//! its JSON-RPC like any client: the indexer builds the span index of every approved datanet
//! version, and the trainer runs training jobs on datanet versions and registers their adapters.
//!
//! HTTP, beside the content API:
//! - `GET /datanets/{id}/versions/{v}/index`: the version's span index, building, ready or failed;
//! - `POST /jobs/train`, `GET /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/loss_curve.svg`.
//!
//! In dev mode an API key stands for a dev account: `Authorization: Bearer dev-<N>` acts as dev
//! account N, whose transactions the node signs.

mod indexer;
mod trainer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_signer_local::PrivateKeySigner;
use axum::{
    Json, Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::sync::OnceCell;

use crate::attribution::registry::IndexRegistry;

pub use indexer::Indexer;
pub use trainer::Trainer;

/// The base model the services use: the one given, or the dev base model, built on first need
/// (so that the node starts at once).
pub struct BaseModel {
    given: Option<PathBuf>,
    resolved: OnceCell<PathBuf>,
}

impl BaseModel {
    /// The base `given`, or the dev base model.
    pub fn new(given: Option<PathBuf>) -> Self {
        Self {
            given,
            resolved: OnceCell::new(),
        }
    }

    /// Its checkpoint directory, building the dev base model the first time it is needed.
    pub async fn path(&self) -> anyhow::Result<PathBuf> {
        let path = self
            .resolved
            .get_or_try_init(|| async {
                let given = self.given.clone();
                tokio::task::spawn_blocking(move || crate::factory::base_or_dev(given.as_deref()))
                    .await?
            })
            .await?;
        Ok(path.clone())
    }
}

/// What the services share.
pub struct Flywheel {
    /// The node's own JSON-RPC and content API, which the services are clients of.
    pub rpc_url: String,
    pub api_url: String,
    pub base: BaseModel,
    pub indexes: Arc<IndexRegistry>,
    /// Keys of the dev accounts API keys stand for.
    pub accounts: Vec<PrivateKeySigner>,
}

impl Flywheel {
    /// The index of the dev account an API key stands for.
    fn account(&self, headers: &HeaderMap) -> Result<usize, ApiError> {
        let unauthorized = |m: String| ApiError(StatusCode::UNAUTHORIZED, m);
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthorized("an API key is needed: Authorization: Bearer dev-<N>".into())
            })?;
        key.strip_prefix("dev-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < self.accounts.len())
            .ok_or_else(|| {
                unauthorized(format!(
                    "unknown API key {key:?}: dev-0 to dev-{} stand for the dev accounts",
                    self.accounts.len().saturating_sub(1)
                ))
            })
    }
}

/// Starts the indexer and the trainer on the current runtime, keeping jobs and adapters under
/// the data directory `datadir`; returns their routes.
pub fn start(flywheel: Flywheel, datadir: &Path) -> anyhow::Result<Router> {
    let flywheel = Arc::new(flywheel);
    let indexer = Indexer::start(flywheel.clone());
    let trainer = Trainer::start(flywheel, datadir.join("jobs"), datadir.join("adapters"))?;
    Ok(indexer.router().merge(trainer.router()))
}

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, message.into())
    }
}
