//! What the demo prints at the end: who earned what, read back from the modules' events, with
//! the check that every fee charged is accounted for to the wei.

use std::collections::BTreeMap;
use std::fmt;

use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::TransactionReceipt;
use alloy_sol_types::SolEvent;
use anyhow::Context;
use openledger_attribution::Credit;
use openledger_primitives::{
    addresses::{DATANETS, FEEDBACK, SETTLEMENT, STAKING},
    format_open,
};
use openledger_protocol::abi::{IDatanets, IFeedback, ISettlement, IStaking};
use openledger_protocol::settlement::AttributionMethod;
use serde_json::{Value, json};

use super::actors::Cast;
use super::api::Trained;

/// One answer the user paid for, as the node's completion API returned it.
pub struct Inference {
    /// The model's artifact version that answered.
    pub artifact: u64,
    pub datanet: U256,
    pub version: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub prompt: String,
    pub output: String,
    /// How the node attributed it: `span`, `gradient` or `none`.
    pub method: String,
    pub weights: Vec<Credit>,
    /// The text of each span that counted.
    pub spans: Vec<String>,
    /// Its settlement: the receipt id, and the transaction the node sent it in.
    pub receipt_id: B256,
    pub settlement_tx: B256,
}

impl Inference {
    /// The answer to `prompt` in a completion response.
    pub fn answered(prompt: String, response: &Value) -> anyhow::Result<Self> {
        let paid = &response["openledger"];
        let attribution = &paid["attribution"];
        let datanet: String = field(attribution, "datanetId")?;
        let spans: Option<Vec<Value>> = field(attribution, "spans").ok();
        Ok(Self {
            artifact: field(paid, "artifactVersion")?,
            datanet: datanet.parse().context("the completion's datanetId")?,
            version: field(attribution, "datanetVersion")?,
            input_tokens: field(&response["usage"], "prompt_tokens")?,
            output_tokens: field(&response["usage"], "completion_tokens")?,
            output: field(&response["choices"][0], "text")?,
            prompt,
            method: field(attribution, "method")?,
            weights: field(attribution, "weights")?,
            spans: spans
                .into_iter()
                .flatten()
                .filter_map(|s| s["text"].as_str().map(str::to_string))
                .collect(),
            receipt_id: field(paid, "receiptId")?,
            settlement_tx: field(paid, "settlementTx")?,
        })
    }

    /// The weights of its span attribution, if its spans were found in the data.
    pub fn span_weights(&self) -> Option<&[Credit]> {
        (self.method == "span" && !self.weights.is_empty()).then_some(&self.weights[..])
    }

    /// A receipt of this answer as span-attributed, with its token counts and hashes.
    pub fn receipt(&self) -> anyhow::Result<ISettlement::InferenceReceipt> {
        openledger_flywheel::ledger::inference_receipt(
            (self.input_tokens, self.output_tokens),
            (&self.prompt, &self.output),
            (self.artifact, self.datanet, self.version),
            AttributionMethod::Span,
            &self.weights,
        )
    }
}

/// Field `name` of a completion response's `value`.
fn field<T: serde::de::DeserializeOwned>(value: &Value, name: &str) -> anyhow::Result<T> {
    serde_json::from_value(value[name].clone())
        .with_context(|| format!("the completion's {name} is missing or malformed"))
}

/// The transactions the report reads back.
pub struct Receipts {
    /// The creator's purchase of training access to the datanet version.
    pub access: TransactionReceipt,
    /// The trainer's payment for the training job's compute.
    pub compute: TransactionReceipt,
    /// The node's settlements of the answers, then the operator's tampered one.
    pub settled: Vec<TransactionReceipt>,
    /// The validators' `finalize` calls.
    pub ratings: Vec<TransactionReceipt>,
    /// The answer the operator settled with tampered weights, and the contribution they
    /// credited in full.
    pub tampered: Option<(usize, U256)>,
    /// The challenge of the tampered receipt.
    pub challenge: Option<TransactionReceipt>,
    /// Everyone's claims.
    pub claims: Vec<TransactionReceipt>,
}

/// The trainer's role: paid at once, not claimed.
const COMPUTE_ROLE: &str = "training compute";

/// A line of the earnings table.
struct Earning {
    who: String,
    role: String,
    earned: U256,
}

/// The demo's outcome.
pub struct Report {
    training_job: u64,
    train_rows: usize,
    loss: (f64, f64),
    inferences: usize,
    /// What inferences, training access and training compute charged.
    inference_fees: U256,
    access_fee: U256,
    compute_fee: U256,
    /// The receipt ids of the answers' settlements, for `GET /settlements/{id}`.
    receipt_ids: Vec<B256>,
    attributed: usize,
    fees: U256,
    /// What upheld challenges took from the operator's stake.
    slashed: U256,
    earnings: Vec<Earning>,
    accounted: U256,
    /// What each actor claimed, beside what it earned.
    claims: BTreeMap<String, (U256, U256)>,
    evidence: Option<Value>,
    challenge: Option<Value>,
}

/// The events of type `E` that `module` emitted in `receipts`.
fn module_events<E: SolEvent>(receipts: &[&TransactionReceipt], module: Address) -> Vec<E> {
    receipts
        .iter()
        .flat_map(|r| r.inner.logs())
        .filter(|log| log.address() == module)
        .filter_map(|log| E::decode_log_data(log.data()).ok())
        .collect()
}

impl Report {
    /// Reads the settlement, rating and claim receipts back into who earned and claimed what.
    pub fn new(
        cast: &Cast,
        contributions: &[U256],
        trained: &Trained,
        inferences: &[Inference],
        receipts: &Receipts,
    ) -> anyhow::Result<Self> {
        let settled: Vec<&TransactionReceipt> = receipts.settled.iter().collect();
        let inference_fees: U256 = module_events::<ISettlement::Settled>(&settled, SETTLEMENT)
            .iter()
            .map(|s| s.fee)
            .sum();
        let access = [&receipts.access];
        let granted = module_events::<IDatanets::AccessGranted>(&access, DATANETS);
        let access_fee: U256 = granted.iter().map(|g| g.fee).sum();
        let compute = [&receipts.compute];
        let paid = module_events::<ISettlement::TrainingPaid>(&compute, SETTLEMENT);
        let compute_fee: U256 = paid.iter().map(|p| p.amount).sum();
        let mut earned: BTreeMap<(String, String), U256> = BTreeMap::new();
        let mut add = |who: String, role: &str, amount: U256| {
            *earned.entry((who, role.to_string())).or_default() += amount;
        };
        let accrued = module_events::<ISettlement::RewardAccrued>(&settled, SETTLEMENT)
            .into_iter()
            .chain(module_events::<ISettlement::RewardAccrued>(
                &access, SETTLEMENT,
            ));
        for r in accrued {
            let role = match r.role {
                ISettlement::Role::Creator => "creator's share",
                ISettlement::Role::Stakers => "stakers' share (no delegators)",
                ISettlement::Role::Contributor => "data contributions",
                ISettlement::Role::AccessContributor => "training on their rows",
                ISettlement::Role::AccessOwner => "datanet owner (training access)",
                _ => "datanet owner (unattributed)",
            };
            add(cast.name_of(r.account), role, r.amount);
        }
        for g in &granted {
            add("treasury".into(), "training access share", g.toTreasury);
        }
        for p in &paid {
            add(cast.name_of(p.trainer), COMPUTE_ROLE, p.amount);
        }
        let fees = inference_fees + access_fee + compute_fee;
        let to_treasury = module_events::<ISettlement::TreasuryPaid>(&settled, SETTLEMENT)
            .iter()
            .map(|t| t.amount)
            .chain(
                module_events::<ISettlement::RewardCut>(&settled, SETTLEMENT)
                    .iter()
                    .map(|c| c.amount),
            )
            .sum();
        add("treasury".into(), "platform fee and dust", to_treasury);
        let stakers: U256 = module_events::<IStaking::RewardsDistributed>(&settled, STAKING)
            .iter()
            .map(|d| d.amount)
            .sum();
        add(cast.staker.name.clone(), "stakers' share", stakers);
        let pool: U256 = module_events::<IFeedback::ReceiptRecorded>(&settled, FEEDBACK)
            .iter()
            .map(|r| r.reward)
            .sum();
        let ratings: Vec<&TransactionReceipt> = receipts.ratings.iter().collect();
        let mut rated = U256::ZERO;
        for s in module_events::<IFeedback::RatingScored>(&ratings, FEEDBACK) {
            add(cast.name_of(s.validator), "ratings", s.reward);
            rated += s.reward;
        }
        add(
            "feedback pool".into(),
            "left for receipts not rated",
            pool.checked_sub(rated)
                .context("validators earned more than the feedback pool held")?,
        );
        let challenge: Vec<&TransactionReceipt> = receipts.challenge.iter().collect();
        let mut slashed = U256::ZERO;
        for r in module_events::<ISettlement::Resettled>(&challenge, SETTLEMENT) {
            add(
                cast.challenger.name.clone(),
                "upheld challenge",
                r.toChallenger,
            );
            add("treasury".into(), "slash remainder and dust", r.toTreasury);
            slashed += r.slashed;
        }
        for r in module_events::<ISettlement::RewardAccrued>(&challenge, SETTLEMENT) {
            add(
                cast.name_of(r.account),
                "re-settled from the slash",
                r.amount,
            );
        }
        for c in module_events::<ISettlement::RewardCut>(&challenge, SETTLEMENT) {
            add("treasury".into(), "slash remainder and dust", c.amount);
        }
        let accounted = earned.values().copied().sum();
        let earnings: Vec<Earning> = earned
            .into_iter()
            .filter(|(_, amount)| !amount.is_zero())
            .map(|((who, role), earned)| Earning { who, role, earned })
            .collect();
        let mut claimed: BTreeMap<String, (U256, U256)> = claimed_by(cast, &receipts.claims)
            .into_iter()
            .map(|(who, amount)| (who, (amount, U256::ZERO)))
            .collect();
        // Compute is paid to the trainer at once; everything else is claimed.
        for e in earnings.iter().filter(|e| e.role != COMPUTE_ROLE) {
            if let Some(line) = claimed.get_mut(&e.who) {
                line.1 += e.earned;
            }
        }
        Ok(Self {
            training_job: trained.job,
            train_rows: trained.rows,
            loss: trained.loss,
            inferences: inferences.len(),
            inference_fees,
            access_fee,
            compute_fee,
            receipt_ids: inferences.iter().map(|i| i.receipt_id).collect(),
            attributed: inferences.iter().filter(|i| !i.weights.is_empty()).count(),
            fees,
            slashed,
            earnings,
            accounted,
            claims: claimed,
            evidence: evidence(cast, contributions, inferences),
            challenge: challenge_summary(cast, contributions, receipts.tampered, &challenge),
        })
    }

    /// Whether the earnings add up to the fees charged (inferences, training access and
    /// compute) and the stake slashed, to the wei.
    pub fn conserved(&self) -> bool {
        self.fees + self.slashed == self.accounted
    }

    /// The report as JSON (amounts in wei, as decimal strings).
    pub fn to_json(&self) -> Value {
        json!({
            "trainingJob": self.training_job,
            "trainRows": self.train_rows,
            "evalLossBefore": self.loss.0,
            "evalLossAfter": self.loss.1,
            "inferences": self.inferences,
            "receiptIds": self.receipt_ids,
            "attributed": self.attributed,
            "fees": self.fees.to_string(),
            "inferenceFees": self.inference_fees.to_string(),
            "accessFee": self.access_fee.to_string(),
            "computeFee": self.compute_fee.to_string(),
            "slashed": self.slashed.to_string(),
            "accounted": self.accounted.to_string(),
            "conserved": self.conserved(),
            "earnings": self.earnings.iter().map(|e| json!({
                "who": e.who, "role": e.role, "earned": e.earned.to_string(),
            })).collect::<Vec<_>>(),
            "claims": self.claims.iter().map(|(who, (claimed, earned))| json!({
                "who": who, "claimed": claimed.to_string(), "earned": earned.to_string(),
            })).collect::<Vec<_>>(),
            "evidence": self.evidence,
            "challenge": self.challenge,
        })
    }
}

/// What each actor claimed from the Settlement, Staking and Feedback modules together.
fn claimed_by(cast: &Cast, claims: &[TransactionReceipt]) -> BTreeMap<String, U256> {
    let claims: Vec<&TransactionReceipt> = claims.iter().collect();
    let settlement = module_events::<ISettlement::Claimed>(&claims, SETTLEMENT)
        .into_iter()
        .map(|c| (c.account, c.amount));
    let staking = module_events::<IStaking::RewardsClaimed>(&claims, STAKING)
        .into_iter()
        .map(|c| (c.account, c.amount));
    let feedback = module_events::<IFeedback::RewardsClaimed>(&claims, FEEDBACK)
        .into_iter()
        .map(|c| (c.validator, c.amount));
    let mut out = BTreeMap::new();
    for (account, amount) in settlement.chain(staking).chain(feedback) {
        *out.entry(cast.name_of(account)).or_default() += amount;
    }
    out
}

/// The name of the contributor of contribution `id`.
fn contributor(cast: &Cast, contributions: &[U256], id: &str) -> String {
    contributions
        .iter()
        .zip(&cast.contributors)
        .find(|(c, _)| c.to_string() == id)
        .map_or_else(|| id.to_string(), |(_, a)| a.name.clone())
}

/// What the challenge found and moved.
fn challenge_summary(
    cast: &Cast,
    contributions: &[U256],
    tampered: Option<(usize, U256)>,
    challenge: &[&TransactionReceipt],
) -> Option<Value> {
    let (answer, victim) = tampered?;
    let found = module_events::<ISettlement::Challenged>(challenge, SETTLEMENT).pop()?;
    let moved = module_events::<ISettlement::Resettled>(challenge, SETTLEMENT).pop();
    let repaid: Vec<Value> = module_events::<ISettlement::RewardAccrued>(challenge, SETTLEMENT)
        .iter()
        .map(|r| json!({"who": cast.name_of(r.account), "amount": r.amount.to_string()}))
        .collect();
    Some(json!({
        "answer": answer + 1,
        "settledTo": contributor(cast, contributions, &victim.to_string()),
        "receiptId": found.receiptId,
        "upheld": found.upheld,
        "settledWeightsHash": found.settledWeightsHash,
        "recomputedWeightsHash": found.recomputedWeightsHash,
        "slashed": moved.as_ref().map(|m| m.slashed.to_string()),
        "toContributors": moved.as_ref().map(|m| m.toContributors.to_string()),
        "toChallenger": moved.as_ref().map(|m| m.toChallenger.to_string()),
        "toTreasury": moved.as_ref().map(|m| m.toTreasury.to_string()),
        "repaid": repaid,
    }))
}

/// The attribution of the first attributed answer, with contributions named by contributor.
fn evidence(cast: &Cast, contributions: &[U256], inferences: &[Inference]) -> Option<Value> {
    let inference = inferences.iter().find(|i| i.span_weights().is_some())?;
    let name = |id: &str| contributor(cast, contributions, id);
    Some(json!({
        "prompt": inference.prompt,
        "output": inference.output,
        "spans": inference.spans,
        "weights": inference.weights.iter().map(|c| json!({
            "contribution": c.contribution, "contributor": name(&c.contribution), "ppm": c.ppm,
        })).collect::<Vec<_>>(),
    }))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nModel trained on {} rows by training job {}: held-out loss {:.3} -> {:.3}",
            self.train_rows, self.training_job, self.loss.0, self.loss.1
        )?;
        writeln!(
            f,
            "{} {} served by OpenLoRA and settled by the node, {} attributed to the data, fees {} \
             OPEN{}\n",
            self.inferences,
            if self.inferences == 1 {
                "inference"
            } else {
                "inferences"
            },
            self.attributed,
            format_open(self.inference_fees),
            if self.challenge.is_some() {
                " (with the operator's tampered settlement)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "Training paid {} OPEN for access to the rows and {} OPEN for compute; {} OPEN charged \
             in all\n",
            format_open(self.access_fee),
            format_open(self.compute_fee),
            format_open(self.fees)
        )?;
        writeln!(f, "{:<16} {:<32} {:>22}", "who", "for", "earned (OPEN)")?;
        for e in &self.earnings {
            writeln!(
                f,
                "{:<16} {:<32} {:>22}",
                e.who,
                e.role,
                format_open(e.earned)
            )?;
        }
        writeln!(
            f,
            "{:<16} {:<32} {:>22}",
            "total",
            "",
            format_open(self.accounted)
        )?;
        let check = if self.conserved() {
            "conserved: the earnings add up to the fees charged and the stake slashed, to the wei"
        } else {
            "NOT CONSERVED: the earnings differ from the fees charged and the stake slashed"
        };
        writeln!(f, "{check}\n")?;
        for (who, (claimed, earned)) in &self.claims {
            writeln!(
                f,
                "{who} claimed {} OPEN of the {} earned",
                format_open(*claimed),
                format_open(*earned)
            )?;
        }
        if let Some(c) = &self.challenge {
            let open = |key: &str| crate::cli::open_of(&c[key]);
            writeln!(
                f,
                "\nChallenge: the operator settled answer {} with all its weight on {}",
                c["answer"],
                c["settledTo"].as_str().unwrap_or_default()
            )?;
            let verdict = if c["upheld"] == true {
                "upheld: the recomputed attribution differs"
            } else {
                "rejected: the recomputed attribution matches"
            };
            writeln!(f, "  {verdict}")?;
            writeln!(
                f,
                "  operator slashed {} OPEN: {} re-paid to contributors, {} to the challenger, {} to the treasury",
                open("slashed"),
                open("toContributors"),
                open("toChallenger"),
                open("toTreasury")
            )?;
            for r in c["repaid"].as_array().into_iter().flatten() {
                writeln!(
                    f,
                    "  re-paid {} {} OPEN",
                    r["who"].as_str().unwrap_or_default(),
                    crate::cli::open_of(&r["amount"])
                )?;
            }
        }
        if let Some(e) = &self.evidence {
            writeln!(f, "\nAttribution of one answer")?;
            writeln!(f, "  prompt  {}", e["prompt"].as_str().unwrap_or_default())?;
            writeln!(f, "  answer  {}", e["output"].as_str().unwrap_or_default())?;
            for span in e["spans"].as_array().into_iter().flatten() {
                writeln!(f, "  span    {span}")?;
            }
            for w in e["weights"].as_array().into_iter().flatten() {
                writeln!(
                    f,
                    "  {:>7} ppm  {} (contribution {})",
                    w["ppm"],
                    w["contributor"].as_str().unwrap_or_default(),
                    w["contribution"].as_str().unwrap_or_default()
                )?;
            }
        }
        Ok(())
    }
}
