//! The AI services of `openledger dev`, each on its own task and each reaching the chain through
//! its JSON-RPC like any client: the indexer builds the span index of every approved datanet
//! version, the trainer runs training jobs on datanet versions and registers their adapters, and
//! OpenLoRA serves the deployed models, each completion attributed and settled by the ledger.
//!
//! HTTP, beside the content API:
//! - `GET /datanets/{id}/versions/{v}/index`: the version's span index, building, ready or failed;
//! - `POST /jobs/train`, `GET /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/loss_curve.svg`;
//! - `/v1/...`: the OpenAI-compatible API (`model-<id>` names a model);
//! - `GET /settlements/{receiptId}`: a completion's settlement, pending, failed or settled.
//!
//! In dev mode an API key stands for a dev account: `Authorization: Bearer dev-<N>` acts as dev
//! account N, whose transactions the node signs.

use std::sync::Arc;

use axum::Router;

use crate::holds;
use crate::indexer::Indexer;
use crate::ledger::Ledger;
use crate::openlora::OpenLora;
use crate::settler::Settler;
use crate::shared::Flywheel;
use crate::trainer::Trainer;

/// Starts the indexer, the trainer, the settlement batcher and OpenLoRA on the current runtime;
/// returns their routes.
pub fn start(flywheel: Flywheel) -> anyhow::Result<Router> {
    let flywheel = Arc::new(flywheel);
    let building = flywheel.clone();
    tokio::spawn(async move {
        if let Err(e) = building.base.path().await {
            tracing::error!("cannot build the base model: {e:#}");
        }
    });
    let indexer = Indexer::start(flywheel.clone());
    let trainer = Trainer::start(flywheel.clone())?;
    let holds = Arc::new(holds::Holds::default());
    let settler = Settler::start(
        &flywheel.chain,
        &flywheel.accounts,
        flywheel.datadir.join("settlements"),
        holds.clone(),
    )?;
    let ledger = Ledger::new(flywheel.clone(), settler.clone(), holds);
    let openlora = OpenLora::new(flywheel, ledger);
    Ok(indexer
        .router()
        .merge(trainer.router())
        .merge(openlora.router())
        .merge(settler.router()))
}
