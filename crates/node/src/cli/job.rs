//! `openledger job ...`: training jobs on a dev node's trainer, through its job API: quote one,
//! submit it (its fee held from the creator's escrow on a node that charges for training),
//! follow it and cancel it. The job API knows accounts by their dev API key, so these commands
//! sign as `--account N`.

use alloy_primitives::U256;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use openledger_flywheel::jobs::DatanetVersion;
use serde_json::{Value, json};

use super::{Common, block_on, open_of};

/// Options of `openledger job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    common: Common,
}

/// What a job trains.
#[derive(Debug, Args)]
struct Training {
    /// The model (its creator submits).
    #[arg(long)]
    model: U256,
    /// A datanet version, ID@VERSION (one for each of the model's datanets).
    #[arg(long = "datanet", required = true)]
    datanets: Vec<DatanetVersion>,
    /// Passes over the rows.
    #[arg(long)]
    epochs: Option<usize>,
    /// LoRA rank.
    #[arg(long)]
    rank: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Projections to adapt, comma-separated (q,k,v,o,gate,up,down).
    #[arg(long)]
    targets: Option<String>,
    /// Tokens per training example.
    #[arg(long)]
    context: Option<usize>,
    /// Seed of the initialisation and the batch order.
    #[arg(long)]
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

impl Training {
    fn body(&self) -> Value {
        let mut body = json!({
            "model": self.model.to::<u64>(),
            "datanets": self.datanets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        let options = [
            ("epochs", self.epochs.map(Value::from)),
            ("rank", self.rank.map(Value::from)),
            ("lr", self.lr.map(Value::from)),
            ("targets", self.targets.clone().map(Value::from)),
            ("context", self.context.map(Value::from)),
            ("seed", self.seed.map(Value::from)),
        ];
        for (name, value) in options {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        body
    }
}

/// Runs `openledger job`.
pub fn run(args: JobArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let http = reqwest::Client::new();
        let jobs = format!("{}/jobs", common.api_url.trim_end_matches('/'));
        let key = || {
            common
                .signer
                .account
                .map(|n| format!("dev-{n}"))
                .context("job commands act as a dev account: give --account N")
        };
        let (answer, text) = match args.command {
            JobCommand::Quote(t) => {
                let request = http.post(format!("{jobs}/train?quote")).bearer_auth(key()?);
                let quote = call(request.json(&t.body())).await?;
                let text = format!(
                    "{} training tokens at {} OPEN per 1,000: {} OPEN, paid to {}",
                    quote["trainingTokens"],
                    open_of(&quote["pricePer1k"]),
                    open_of(&quote["fee"]),
                    quote["trainer"].as_str().unwrap_or_default()
                );
                (quote, text)
            }
            JobCommand::Submit(t) => {
                let request = http.post(format!("{jobs}/train")).bearer_auth(key()?);
                let job = call(request.json(&t.body())).await?;
                let text = format!(
                    "Job {} queued; {}",
                    job["id"],
                    payment_line(&job["payment"])
                );
                (job, text)
            }
            JobCommand::Show { id } => {
                let job = call(http.get(format!("{jobs}/{id}"))).await?;
                let text = format!(
                    "Job {id}: {} (step {} of {}){}\n  {}",
                    job["status"].as_str().unwrap_or_default(),
                    job["step"],
                    job["totalSteps"],
                    job["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default(),
                    payment_line(&job["payment"])
                );
                (job, text)
            }
            JobCommand::Cancel { id } => {
                let request = http.delete(format!("{jobs}/{id}")).bearer_auth(key()?);
                let job = call(request).await?;
                let text = format!(
                    "Job {id}: {}",
                    if job["status"] == "cancelled" {
                        "cancelled".to_string()
                    } else {
                        "stops after its current step".to_string()
                    }
                );
                (job, text)
            }
        };
        common.print(answer, text);
        Ok(())
    })
}

/// Sends `request`; the JSON answer, or the node's error.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request
        .send()
        .await
        .context("cannot reach the node's job API (--api-url); is `openledger dev` running?")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the node refused (HTTP {status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(body)
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
