//! Fine-tuning compute, paid in OPEN: a training job is quoted before it is queued (the node's
//! price per 1,000 training tokens times the tokens of the datanet rows it reads, over its
//! epochs), the fee is held from the creator's escrow on-chain (`ISettlement.holdTraining`,
//! signed by the creator as a training order to the node's trainer account), and once the job
//! ends it is paid to the trainer (a new artifact was registered) or refunded.

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolStruct;
use anyhow::Context;
use openledger_ml::{checkpoint::TOKENIZER_FILE, tokenizer, train::TrainOptions};
use openledger_primitives::addresses::SETTLEMENT;
use openledger_protocol::abi::ISettlement;
use serde::{Deserialize, Serialize};

use crate::client::{Client, event};
use crate::jobs::{DatanetVersion, RowsReader, versions_rows};
use crate::shared::Flywheel;

/// How long a creator's training order stays good: the trainer settles the hold well before,
/// and after it the creator may take the fee back itself.
const ORDER_LIFETIME: u64 = 7 * 86_400;

/// A job's payment, as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// Tokens the quote counted: the rows' tokens times the epochs, at most what the job's step
    /// bound lets it train on.
    pub training_tokens: u64,
    /// Wei per 1,000 of them.
    pub price_per_1k: String,
    /// The fee, in wei.
    pub fee: String,
    /// Who is paid.
    pub trainer: Address,
    /// `quoted` (nothing held: free, or not submitted), `held`, `paid` or `refunded`.
    pub status: PaymentStatus,
    /// The hold on-chain (its training order's hash).
    pub hold_id: Option<B256>,
    /// The transaction that held it.
    pub hold_tx: Option<B256>,
    /// The transaction that paid or refunded it.
    pub settle_tx: Option<B256>,
}

/// Where a job's payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Nothing held: the job is free, or was only quoted.
    Quoted,
    /// Held from the creator's escrow while the job waits or runs.
    Held,
    /// Paid to the trainer: the job registered a new artifact.
    Paid,
    /// Back in the creator's escrow: the job failed, was cancelled or trained nothing new.
    Refunded,
}

/// The quote of training `model` on `versions` for `epochs`, reading the rows as the creator
/// (`creator`, a client signing as it) and counting them with the base model's tokenizer.
pub async fn quote(
    flywheel: &Flywheel,
    creator: &Client,
    (model, versions): (U256, &[DatanetVersion]),
    (epochs, context, max_steps): (usize, usize, usize),
) -> anyhow::Result<Payment> {
    let terms = &flywheel.training;
    let trainer = flywheel.accounts[terms.trainer].address();
    let mut payment = Payment {
        training_tokens: 0,
        price_per_1k: terms.price_per_1k.to_string(),
        fee: "0".into(),
        trainer,
        status: PaymentStatus::Quoted,
        hold_id: None,
        hold_tx: None,
        settle_tx: None,
    };
    if terms.price_per_1k.is_zero() {
        return Ok(payment);
    }
    let reader = RowsReader::Signer { model: Some(model) };
    let rows = versions_rows(creator, (&flywheel.api_url, &reader), versions).await?;
    let tokenizer_path = flywheel.base.path().await?.join(TOKENIZER_FILE);
    let tokens = tokio::task::spawn_blocking(move || {
        let tok = tokenizer::load(&tokenizer_path)?;
        rows.iter().try_fold(0u64, |sum, row| {
            let n = tokenizer::encode(&tok, &row.text)?.len().min(context) as u64;
            anyhow::Ok(sum + n)
        })
    })
    .await??;
    let bound = (max_steps * TrainOptions::default().batch_size * context) as u64;
    payment.training_tokens = tokens.saturating_mul(epochs as u64).min(bound);
    let fee = terms
        .price_per_1k
        .checked_mul(U256::from(payment.training_tokens))
        .context("the fee overflows: the node's training price is too high")?
        / U256::from(1_000);
    payment.fee = fee.to_string();
    Ok(payment)
}

/// Holds `payment`'s fee from the escrow of `creator` (whose key signs the training order)
/// for `model`; the payment, held.
pub async fn hold(
    flywheel: &Flywheel,
    creator: &PrivateKeySigner,
    model: U256,
    mut payment: Payment,
) -> anyhow::Result<Payment> {
    let fee: U256 = payment.fee.parse().context("the quoted fee")?;
    if fee.is_zero() {
        return Ok(payment);
    }
    let trainer = trainer_client(flywheel);
    let order = ISettlement::TrainingOrder {
        payer: creator.address(),
        trainer: payment.trainer,
        modelId: model,
        maxFee: fee,
        nonce: U256::from_be_bytes(rand::random::<[u8; 32]>()),
        expiry: trainer.latest_timestamp().await? + ORDER_LIFETIME,
    };
    let domain = openledger_protocol::settlement::domain(flywheel.chain_id);
    let signature = creator.sign_hash_sync(&order.eip712_signing_hash(&domain))?;
    let call = ISettlement::holdTrainingCall {
        order,
        signature: Bytes::from(signature.as_bytes().to_vec()),
        amount: fee,
    };
    let receipt = trainer.send(SETTLEMENT, &call, U256::ZERO).await?;
    let held = event::<ISettlement::TrainingHeld>(&receipt)?;
    payment.status = PaymentStatus::Held;
    payment.hold_id = Some(held.holdId);
    payment.hold_tx = Some(receipt.transaction_hash);
    Ok(payment)
}

/// Ends a held payment: paid to the trainer when the job `trained` a new artifact, refunded
/// otherwise; the payment as it then stands (unchanged when nothing was held).
pub async fn settle(
    flywheel: &Flywheel,
    mut payment: Payment,
    trained: bool,
) -> anyhow::Result<Payment> {
    let Some(hold_id) = payment
        .hold_id
        .filter(|_| payment.status == PaymentStatus::Held)
    else {
        return Ok(payment);
    };
    let trainer = trainer_client(flywheel);
    // Settled already, by a call whose answer a stop cut off: the chain says how.
    let call = ISettlement::trainingHoldCall { holdId: hold_id };
    let status = match trainer.view(SETTLEMENT, &call).await?.status {
        ISettlement::HoldStatus::Paid => Some(PaymentStatus::Paid),
        ISettlement::HoldStatus::Refunded => Some(PaymentStatus::Refunded),
        _ => None,
    };
    if let Some(status) = status {
        payment.status = status;
        return Ok(payment);
    }
    let (receipt, status) = if trained {
        let call = ISettlement::payTrainingCall { holdId: hold_id };
        (
            trainer.send(SETTLEMENT, &call, U256::ZERO).await?,
            PaymentStatus::Paid,
        )
    } else {
        let call = ISettlement::refundTrainingCall { holdId: hold_id };
        (
            trainer.send(SETTLEMENT, &call, U256::ZERO).await?,
            PaymentStatus::Refunded,
        )
    };
    payment.status = status;
    payment.settle_tx = Some(receipt.transaction_hash);
    Ok(payment)
}

/// A client signing as the node's trainer account.
fn trainer_client(flywheel: &Flywheel) -> Client {
    let key = flywheel.accounts[flywheel.training.trainer].clone();
    flywheel.chain.with_signer(key)
}
