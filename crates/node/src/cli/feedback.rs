//! `openledger validator ...` (rating settled inferences) and `openledger feedback export`
//! (the accepted ratings as a preference dataset).
//!
//! A rating is committed first and revealed later, so `validator rate` keeps what it committed
//! in a small JSON file per receipt (under `--state-dir`) for `validator reveal` to send, and
//! for `feedback export` to add the labels, which only their hash reaches the chain. The salt
//! is derived from the signer's key and the receipt, so it can be derived again.

use std::{
    collections::HashMap,
    fmt,
    io::Write,
    path::{Path, PathBuf},
};

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::SolEvent;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use openledger_primitives::addresses::FEEDBACK;
use openledger_protocol::{abi::IFeedback, feedback::commitment};
use serde::{Deserialize, Serialize};

use super::report::{Id, Sent, Time, Wei};
use super::{Client, Common, block_on, date, event, events, parse_open, whose};

/// Options of `openledger validator`.
#[derive(Debug, Args)]
pub struct ValidatorArgs {
    #[command(subcommand)]
    command: ValidatorCommand,
    #[command(flatten)]
    state: StateDir,
    #[command(flatten)]
    common: Common,
}

/// Where committed ratings wait for their reveal.
#[derive(Debug, Args)]
struct StateDir {
    /// Directory of committed ratings [default: <user data dir>/openledger/validator].
    #[arg(long, global = true, env = "OPENLEDGER_VALIDATOR_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn path(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("openledger")
                .join("validator")
        })
    }

    fn file(&self, validator: Address, receipt: B256) -> PathBuf {
        self.path()
            .join(validator.to_string())
            .join(format!("{receipt}.json"))
    }
}

#[derive(Debug, Subcommand)]
enum ValidatorCommand {
    /// Register as a validator with the OPEN given, or add it to your stake.
    Register {
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Start the exit of stake (it stays slashable until withdrawn).
    Exit {
        /// Amount in OPEN.
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Withdraw exited stake once its unbonding period has passed.
    Withdraw,
    /// Commit a rating of a settled inference, during its commit window.
    Rate {
        /// The receipt: the settled order's hash (`orderHash` of the Settled event).
        receipt: B256,
        /// Quality from 0 to 100.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        score: u8,
        /// Flag the output as harmful.
        #[arg(long)]
        harmful: bool,
        /// Labels, comma-separated (only their hash goes on-chain).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// Reveal a committed rating, during the receipt's reveal window.
    Reveal {
        /// The receipt.
        receipt: B256,
    },
    /// Score a receipt's ratings and pay its reward, once its reveal window has passed.
    Finalize {
        /// The receipt.
        receipt: B256,
    },
    /// Pay out your feedback rewards.
    Claim,
    /// Show a validator (default: the signer), or a receipt and its ratings.
    Show {
        /// The validator.
        #[arg(long, conflicts_with = "receipt")]
        address: Option<Address>,
        /// The receipt.
        #[arg(long)]
        receipt: Option<B256>,
    },
}

/// A committed rating, as `validator rate` keeps it until the reveal.
#[derive(Debug, Serialize, Deserialize)]
struct SavedRating {
    receipt: B256,
    validator: Address,
    score: u8,
    harmful: bool,
    labels: Vec<String>,
    salt: B256,
}

impl SavedRating {
    fn labels_hash(&self) -> B256 {
        labels_hash(&self.labels)
    }

    fn commitment(&self) -> B256 {
        let labels = self.labels_hash();
        commitment(
            self.receipt,
            self.validator,
            self.score,
            self.harmful,
            labels,
            self.salt,
        )
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().expect("a file under the state directory");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| {
            format!(
                "no committed rating at {}: rate the receipt first with `openledger validator \
                 rate` (and the same --state-dir)",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is corrupt", path.display()))
    }
}

/// The hash of a rating's labels: `keccak256` of them joined by commas, or zero with none.
fn labels_hash(labels: &[String]) -> B256 {
    if labels.is_empty() {
        B256::ZERO
    } else {
        keccak256(labels.join(",").as_bytes())
    }
}

/// Runs `openledger validator`.
pub fn run(args: ValidatorArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        let (receipt, text) = match args.command {
            ValidatorCommand::Register { amount } => {
                let receipt = client
                    .send(FEEDBACK, &IFeedback::registerValidatorCall {}, amount)
                    .await?;
                let stake = event::<IFeedback::ValidatorStaked>(&receipt)?.stake;
                (receipt, format!("Validator stake is now {}", Wei(stake)))
            }
            ValidatorCommand::Exit { amount } => {
                let call = IFeedback::requestExitCall { amount };
                let receipt = client.send(FEEDBACK, &call, U256::ZERO).await?;
                let release = event::<IFeedback::ExitRequested>(&receipt)?.releaseAt;
                let text = format!("Exiting {}; withdraw from {}", Wei(amount), date(release));
                (receipt, text)
            }
            ValidatorCommand::Withdraw => {
                let call = IFeedback::withdrawExitedCall {};
                let receipt = client.send(FEEDBACK, &call, U256::ZERO).await?;
                let amount = event::<IFeedback::ExitWithdrawn>(&receipt)?.amount;
                (receipt, format!("Withdrew {}", Wei(amount)))
            }
            ValidatorCommand::Rate {
                receipt,
                score,
                harmful,
                labels,
            } => {
                let validator = client.sender()?;
                let rating = SavedRating {
                    receipt,
                    validator,
                    score,
                    harmful,
                    labels,
                    salt: client
                        .signer_secret(&[b"openledger feedback salt", &receipt[..]].concat())?,
                };
                // Saved before sending, so that a committed rating is never forgotten.
                rating.save(&args.state.file(validator, receipt))?;
                let call = IFeedback::rateCall {
                    receiptId: receipt,
                    commitment: rating.commitment(),
                };
                let tx = client.send(FEEDBACK, &call, U256::ZERO).await?;
                (
                    tx,
                    format!("Committed a rating of {receipt}; reveal it in the reveal window"),
                )
            }
            ValidatorCommand::Reveal { receipt } => {
                let validator = client.sender()?;
                let rating = SavedRating::load(&args.state.file(validator, receipt))?;
                let call = IFeedback::revealCall {
                    receiptId: receipt,
                    score: rating.score,
                    harmful: rating.harmful,
                    labelsHash: rating.labels_hash(),
                    salt: rating.salt,
                };
                let tx = client.send(FEEDBACK, &call, U256::ZERO).await?;
                let text = format!("Revealed score {} for {receipt}", rating.score);
                (tx, text)
            }
            ValidatorCommand::Finalize { receipt } => {
                let call = IFeedback::finalizeCall { receiptId: receipt };
                let tx = client.send(FEEDBACK, &call, U256::ZERO).await?;
                let done = event::<IFeedback::Finalized>(&tx)?;
                let mut text = format!(
                    "Finalized {receipt}: median {}, {} accepted rating(s) earning {} each",
                    done.median,
                    done.accepted,
                    Wei(done.rewardEach)
                );
                if let Some(flag) = events::<IFeedback::HarmfulFlagged>(&tx).first() {
                    text += &format!("\nFlagged harmful: slashing proposal {}", flag.proposalId);
                }
                (tx, text)
            }
            ValidatorCommand::Claim => {
                let tx = client
                    .send(FEEDBACK, &IFeedback::claimCall {}, U256::ZERO)
                    .await?;
                let amount = event::<IFeedback::RewardsClaimed>(&tx)?.amount;
                (tx, format!("Claimed {}", Wei(amount)))
            }
            ValidatorCommand::Show { address, receipt } => {
                return match receipt {
                    Some(receipt) => common.report(&show_receipt(&client, receipt).await?),
                    None => common.report(&show_validator(&client, address).await?),
                };
            }
        };
        common.report(&Sent::new(&receipt, text))
    })
}

/// A validator's stake, exit and rewards.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Validator {
    validator: Address,
    stake: Wei,
    exiting: Wei,
    release_at: Time,
    outlier_streak: u64,
    rewards: Wei,
}

async fn show_validator(client: &Client, address: Option<Address>) -> anyhow::Result<Validator> {
    let validator = whose(client, address, "validator to show: --address ADDR")?;
    let v = client
        .view(FEEDBACK, &IFeedback::validatorOfCall { validator })
        .await?;
    Ok(Validator {
        validator,
        stake: Wei(v.stake),
        exiting: Wei(v.exiting),
        release_at: Time(v.releaseAt),
        outlier_streak: v.outlierStreak.into(),
        rewards: Wei(v.rewards),
    })
}

impl fmt::Display for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Validator {}", self.validator)?;
        writeln!(f, "  stake           {}", self.stake)?;
        let (exiting, release) = (self.exiting, self.release_at);
        writeln!(f, "  exiting         {exiting} (from {release})")?;
        writeln!(f, "  outliers        {} in a row", self.outlier_streak)?;
        write!(f, "  rewards         {}", self.rewards)
    }
}

/// A settled receipt's rating round.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Round {
    receipt: B256,
    model_id: Id,
    phase: String,
    settled_at: Time,
    commit_end: Time,
    reveal_end: Time,
    reward: Wei,
    median: u8,
    ratings: Vec<Rating>,
}

/// One validator's rating in a round.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rating {
    validator: Address,
    weight: Wei,
    revealed: bool,
    score: u8,
    harmful: bool,
    labels_hash: B256,
}

async fn show_receipt(client: &Client, receipt: B256) -> anyhow::Result<Round> {
    let r = client
        .view(FEEDBACK, &IFeedback::receiptCall { receiptId: receipt })
        .await?;
    if r.phase == IFeedback::Phase::Unknown {
        bail!("no settled inference has receipt {receipt}");
    }
    let raters = client
        .view(FEEDBACK, &IFeedback::ratersOfCall { receiptId: receipt })
        .await?;
    let mut ratings = Vec::new();
    for validator in raters {
        let call = IFeedback::ratingOfCall {
            receiptId: receipt,
            validator,
        };
        let rating = client.view(FEEDBACK, &call).await?;
        ratings.push(Rating {
            validator,
            weight: Wei(rating.weight),
            revealed: rating.revealed,
            score: rating.score,
            harmful: rating.harmful,
            labels_hash: rating.labelsHash,
        });
    }
    Ok(Round {
        receipt,
        model_id: Id(r.modelId),
        phase: format!("{:?}", r.phase),
        settled_at: Time(r.settledAt),
        commit_end: Time(r.commitEnd),
        reveal_end: Time(r.revealEnd),
        reward: Wei(r.reward),
        median: r.median,
        ratings,
    })
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Receipt {} of model {}", self.receipt, self.model_id)?;
        let (phase, commit, reveal) = (&self.phase, self.commit_end, self.reveal_end);
        writeln!(
            f,
            "  phase           {phase} (commit until {commit}, reveal until {reveal})"
        )?;
        writeln!(f, "  reward          {}", self.reward)?;
        write!(f, "  median          {}", self.median)?;
        for r in &self.ratings {
            let shown = match (r.revealed, r.harmful) {
                (false, _) => "not revealed".to_string(),
                (true, harmful) => {
                    format!(
                        "score {}{}",
                        r.score,
                        if harmful { ", harmful" } else { "" }
                    )
                }
            };
            write!(f, "\n  {}  {shown}  (weight {})", r.validator, r.weight)?;
        }
        Ok(())
    }
}

/// Options of `openledger feedback`.
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    #[command(subcommand)]
    command: FeedbackCommand,
    #[command(flatten)]
    state: StateDir,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum FeedbackCommand {
    /// Write every accepted rating as a preference dataset, one JSON object per line.
    Export {
        /// File to write [default: standard output].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Only ratings of this model.
        #[arg(long)]
        model: Option<U256>,
        /// First block to read.
        #[arg(long, default_value_t = 0)]
        from_block: u64,
    },
}

/// An accepted rating, a line of `feedback export`.
#[derive(Debug, Serialize)]
struct Preference {
    receipt_id: B256,
    model_id: Id,
    prompt_hash: B256,
    output_hash: B256,
    validator: Address,
    score: u8,
    harmful: bool,
    labels_hash: B256,
    labels: Option<Vec<String>>,
}

/// Runs `openledger feedback`.
pub fn run_feedback(args: FeedbackArgs) -> anyhow::Result<()> {
    let FeedbackCommand::Export {
        output,
        model,
        from_block,
    } = args.command;
    block_on(async move {
        let client = args.common.client()?;
        let head = client.block_number().await?;
        let topics = [
            IFeedback::ReceiptRecorded::SIGNATURE_HASH,
            IFeedback::RatingScored::SIGNATURE_HASH,
        ];
        let logs = client.logs(FEEDBACK, &topics, from_block, head).await?;
        let mut receipts = HashMap::new();
        let mut rows = Vec::new();
        for log in &logs {
            if let Ok(r) = IFeedback::ReceiptRecorded::decode_log_data(log.data()) {
                receipts.insert(r.receiptId, r);
            } else if let Ok(scored) = IFeedback::RatingScored::decode_log_data(log.data())
                && scored.accepted
            {
                rows.push(scored);
            }
        }
        let mut out: Box<dyn Write> = match &output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut written = 0;
        for scored in rows {
            let Some(recorded) = receipts.get(&scored.receiptId) else {
                continue;
            };
            if model.is_some_and(|m| m != recorded.modelId) {
                continue;
            }
            let saved =
                SavedRating::load(&args.state.file(scored.validator, scored.receiptId)).ok();
            let labels = saved
                .filter(|s| s.labels_hash() == scored.labelsHash)
                .map(|s| s.labels);
            let row = Preference {
                receipt_id: scored.receiptId,
                model_id: Id(recorded.modelId),
                prompt_hash: recorded.promptHash,
                output_hash: recorded.outputHash,
                validator: scored.validator,
                score: scored.score,
                harmful: scored.harmful,
                labels_hash: scored.labelsHash,
                labels,
            };
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
            written += 1;
        }
        out.flush()?;
        if let Some(path) = output {
            eprintln!("Wrote {written} accepted rating(s) to {}", path.display());
        }
        Ok(())
    })
}
