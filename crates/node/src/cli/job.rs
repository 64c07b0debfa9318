//! `openledger job ...`: training jobs on a dev node's trainer, through its job API: quote one,
//! submit it (its fee held from the creator's escrow on a node that charges for training),
//! follow it and cancel it. The job API knows accounts by their dev API key, so these commands
//! sign as `--account N`.

use std::fmt;

use alloy_primitives::U256;
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_flywheel::compute::Payment;
use openledger_flywheel::jobs::{DatanetVersion, send_to_api};
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{Common, block_on, open_of};

/// Options of `openledger job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    common: Common,
}

/// What a job trains: the body of `POST /jobs/train`, options left out taking the node's
/// defaults.
#[derive(Debug, Args, Serialize)]
struct Training {
    /// The model (its creator submits).
    #[arg(long)]
    #[serde(serialize_with = "as_u64")]
    model: U256,
    /// A datanet version, ID@VERSION (one for each of the model's datanets).
    #[arg(long = "datanet", required = true)]
    #[serde(serialize_with = "as_strings")]
    datanets: Vec<DatanetVersion>,
    /// Passes over the rows.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// LoRA rank.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    /// Projections to adapt, comma-separated (q,k,v,o,gate,up,down).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<String>,
    /// Tokens per training example.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<usize>,
    /// Seed of the initialisation and the batch order.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// What the node would charge for the job (nothing is queued or held).
    Quote(Training),
    /// Queue the job; on a node that charges for training its fee is held from your escrow first.
    Submit(Training),
    /// Show a job: its status, step and payment (`--json` adds its losses and log).
    Show {
        /// The job.
        id: u64,
    },
    /// Cancel a job of yours; a held fee is refunded.
    Cancel {
        /// The job.
        id: u64,
    },
}

fn as_u64<S: Serializer>(model: &U256, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(model.saturating_to())
}

fn as_strings<S: Serializer>(
    versions: &[DatanetVersion],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(versions.iter().map(ToString::to_string))
}

/// Runs `openledger job`.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let http = reqwest::Client::new();
        let api = common.api_url.trim_end_matches('/');
        let jobs = format!("{api}/jobs");
        let key = || {
            common
                .signer
                .account
                .map(|n| format!("dev-{n}"))
                .context("job commands act as a dev account: give --account N")
        };
        match args.command {
            JobCommand::Quote(t) => {
                let request = http.post(format!("{jobs}/train?quote")).bearer_auth(key()?);
                let quote: Payment = serde_json::from_value(call(request.json(&t), api).await?)?;
                common.report(&Quote(quote))
            }
            JobCommand::Submit(t) => {
                let request = http.post(format!("{jobs}/train")).bearer_auth(key()?);
                common.report(&Job::Queued(call(request.json(&t), api).await?))
            }
            JobCommand::Show { id } => common.report(&Job::Shown(
                call(http.get(format!("{jobs}/{id}")), api).await?,
            )),
            JobCommand::Cancel { id } => {
                let request = http.delete(format!("{jobs}/{id}")).bearer_auth(key()?);
                common.report(&Job::Cancelled(call(request, api).await?))
            }
        }
    })
}

/// What the node would charge for a job.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Quote(Payment);

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.0;
        write!(
            f,
            "{} training tokens at {} OPEN per 1,000: {} OPEN, paid to {}",
            q.training_tokens,
            open_of(&q.price_per_1k.as_str().into()),
            open_of(&q.fee.as_str().into()),
            q.trainer
        )
    }
}

/// A job as the node's job API shows it (`--json` prints all of it), after what was asked.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Job {
    Queued(Value),
    Shown(Value),
    Cancelled(Value),
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Queued(job) => write!(
                f,
                "Job {} queued; {}",
                job["id"],
                payment_line(&job["payment"])
            ),
            Job::Shown(job) => {
                let error = job["error"].as_str().map(|e| format!(": {e}"));
                write!(
                    f,
                    "Job {}: {} (step {} of {}){}\n  {}",
                    job["id"],
                    job["status"].as_str().unwrap_or_default(),
                    job["step"],
                    job["totalSteps"],
                    error.unwrap_or_default(),
                    payment_line(&job["payment"])
                )
            }
            Job::Cancelled(job) => {
                let done = if job["status"] == "cancelled" {
                    "cancelled"
                } else {
                    "stops after its current step"
                };
                write!(f, "Job {}: {done}", job["id"])
            }
        }
    }
}

/// Sends `request` to the job API at `api_url`; the JSON answer, or the node's error.
async fn call(request: reqwest::RequestBuilder, api_url: &str) -> anyhow::Result<Value> {
    let response = send_to_api(request, api_url, "the node refused").await?;
    Ok(response.json().await.unwrap_or_default())
}

/// A job's payment, for text output.
fn payment_line(payment: &Value) -> String {
    let fee = open_of(&payment["fee"]);
    match payment["status"].as_str() {
        Some("held") => format!("fee {fee} OPEN held from the creator's escrow"),
        Some("paid") => format!("fee {fee} OPEN paid to the trainer"),
        Some("refunded") => format!("fee {fee} OPEN refunded"),
        _ if fee == "0" => "free of charge".to_string(),
        _ => format!("quoted {fee} OPEN"),
    }
}
