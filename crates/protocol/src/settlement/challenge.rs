//! Challenges of settled span attributions (see `abi/ISettlement.sol`).
//!
//! Settling a receipt stores the hash of its [`ReceiptRecord`] and when it was settled: two
//! words, so that recording costs little beside the settlement. A challenger sends the record
//! back (from the `ReceiptRecorded` event) with the prompt and output texts; the node's
//! [`AttributionOracle`] recomputes the span attribution, and a difference re-pays the
//! contributors from the operator's stake.

use crate::Result;
use std::fmt::Debug;

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{SolCall, SolValue};
use openledger_chain::ModuleError;
use openledger_primitives::{OPEN, addresses};

use super::fee::{self, PPM, Shares};
use super::{AttributionMethod, accrue, contributor_payees, cut_penalty};
use crate::{
    abi::{
        ISettlement::{self, ReceiptRecord, ReceiptStatus},
        IStaking,
    },
    call::{Answer, emit, revert},
    state::settlement::{RECORDS, record},
    storage::Storage,
};

/// Recomputes span attributions for challenges. The chain knows nothing of tokenizers or
/// indexes: the node that runs it provides this, from the datanet versions' content it holds.
/// Like any state transition, every validator must hold the indexes of the versions its models
/// settle against and answer identically; the arithmetic is integer, so they do.
pub trait AttributionOracle: Send + Sync + Debug {
    /// The span attribution of `output`, the continuation of `prompt`, over the approved rows of
    /// `datanet` at `version`: `(contribution id, ppm)` pairs summing to one million, or none
    /// when no span of the output occurs in the rows. An error says why this node cannot
    /// compute it.
    fn span_weights(
        &self,
        datanet: U256,
        version: u64,
        prompt: &str,
        output: &str,
    ) -> Result<Vec<(U256, u32)>, String>;
}

/// The bond a challenge carries, lost to the treasury if the settled weights were right.
pub const CHALLENGE_BOND: U256 = OPEN;
/// Seconds after settlement during which a receipt can be challenged.
pub const CHALLENGE_WINDOW: u64 = 7 * 24 * 3600;
/// The part of the operator's stake an upheld challenge takes, in ppm.
pub const CHALLENGE_SLASH_PPM: u32 = 100_000;
/// The longest prompt plus output a challenge recomputes, in bytes.
pub const MAX_CHALLENGE_TEXT: usize = 64 * 1024;
/// Gas a challenge pays before its texts, and per byte of them: tokenizing and searching the
/// suffix array grow with the text.
const CHALLENGE_BASE_GAS: u64 = 50_000;
const CHALLENGE_GAS_PER_BYTE: u64 = 200;

/// The hash settled weights are compared by: `keccak256(abi.encode(ids, weights))` with the
/// pairs sorted by contribution id, so that the order a receipt lists them in does not matter.
pub fn weights_hash(ids: &[U256], weights: &[u32]) -> B256 {
    let mut pairs: Vec<(U256, u32)> = ids.iter().copied().zip(weights.iter().copied()).collect();
    pairs.sort_unstable();
    let (ids, weights): (Vec<U256>, Vec<u32>) = pairs.into_iter().unzip();
    keccak256((ids, weights).abi_encode_params())
}

/// Records a settled receipt for challenges.
pub(super) fn record(s: &mut Storage<'_>, receipt_id: B256, record: ReceiptRecord) -> Result<()> {
    let slot = RECORDS.at(receipt_id);
    s.set(slot.field(record::HASH), keccak256(record.abi_encode()))?;
    let now = s.host().timestamp();
    s.set(
        slot.field(record::STATE),
        state_word(now, ReceiptStatus::Settled),
    )?;
    emit(
        s.host(),
        &ISettlement::ReceiptRecorded {
            receiptId: receipt_id,
            record,
        },
    )
}

fn state_word(settled_at: u64, status: ReceiptStatus) -> U256 {
    U256::from(settled_at) | (U256::from(status as u8) << 64)
}

/// A receipt's status, settlement time and record hash.
pub(super) fn status(s: &mut Storage<'_>, receipt_id: B256) -> Result<(ReceiptStatus, u64, B256)> {
    let slot = RECORDS.at(receipt_id);
    let state: U256 = s.get(slot.field(record::STATE))?;
    let settled_at = (state & U256::from(u64::MAX)).saturating_to();
    let code: u8 = (state >> 64usize).saturating_to();
    let status = ReceiptStatus::try_from(code)
        .map_err(|_| ModuleError::Fatal(format!("receipt {receipt_id}: bad status word")))?;
    Ok((status, settled_at, s.get(slot.field(record::HASH))?))
}

/// Runs a challenge with `bond` attached; returns whether it was upheld.
pub(super) fn challenge(
    s: &mut Storage<'_>,
    oracle: Option<&dyn AttributionOracle>,
    caller: Address,
    bond: U256,
    c: ISettlement::challengeCall,
) -> Answer {
    let id = c.receiptId;
    let record = &c.record;
    let settled_at = check(s, id, bond, record, &c.prompt, &c.output)?;
    let oracle =
        oracle.ok_or_else(|| unavailable(record, "this node runs no attribution oracle".into()))?;
    let recomputed = oracle
        .span_weights(
            record.datanetId,
            record.datanetVersion,
            &c.prompt,
            &c.output,
        )
        .map_err(|reason| unavailable(record, reason))?;
    let (ids, weights): (Vec<U256>, Vec<u32>) = recomputed.into_iter().unzip();
    let recomputed_hash = weights_hash(&ids, &weights);
    let upheld = recomputed_hash != record.weightsHash;
    let outcome = if upheld {
        ReceiptStatus::Corrected
    } else {
        ReceiptStatus::Verified
    };
    s.set(
        RECORDS.at(id).field(record::STATE),
        state_word(settled_at, outcome),
    )?;
    emit(
        s.host(),
        &ISettlement::Challenged {
            receiptId: id,
            challenger: caller,
            upheld,
            settledWeightsHash: record.weightsHash,
            recomputedWeightsHash: recomputed_hash,
        },
    )?;
    if upheld {
        s.host().transfer(caller, bond)?;
        resettle(s, id, record, caller, ids, weights)?;
    } else {
        s.host().transfer(addresses::TREASURY, bond)?;
    }
    Ok(ISettlement::challengeCall::abi_encode_returns(&upheld).into())
}

/// Everything a challenge must satisfy before anything is recomputed; returns when the receipt
/// was settled.
fn check(
    s: &mut Storage<'_>,
    id: B256,
    bond: U256,
    record: &ReceiptRecord,
    prompt: &str,
    output: &str,
) -> Result<u64> {
    let (status, settled_at, hash) = status(s, id)?;
    match status {
        ReceiptStatus::Unknown => {
            return Err(revert(ISettlement::UnknownReceipt { receiptId: id }));
        }
        ReceiptStatus::Settled => {}
        other => {
            return Err(revert(ISettlement::AlreadyResolved {
                receiptId: id,
                status: other,
            }));
        }
    }
    let deadline = settled_at.saturating_add(CHALLENGE_WINDOW);
    if s.host().timestamp() > deadline {
        return Err(revert(ISettlement::ChallengeWindowClosed {
            receiptId: id,
            deadline,
        }));
    }
    if bond < CHALLENGE_BOND {
        return Err(revert(ISettlement::BondTooLow {
            bond,
            required: CHALLENGE_BOND,
        }));
    }
    if keccak256(record.abi_encode()) != hash {
        return Err(revert(ISettlement::RecordMismatch { receiptId: id }));
    }
    if !AttributionMethod::from_u8(record.method).is_some_and(AttributionMethod::is_recomputable) {
        return Err(revert(ISettlement::NotSpanAttributed {
            method: record.method,
        }));
    }
    let length = prompt.len() + output.len();
    if length > MAX_CHALLENGE_TEXT {
        return Err(revert(ISettlement::TextTooLong {
            length: U256::from(length),
            max: U256::from(MAX_CHALLENGE_TEXT),
        }));
    }
    s.host()
        .charge(CHALLENGE_BASE_GAS + CHALLENGE_GAS_PER_BYTE * length as u64)?;
    if keccak256(prompt) != record.promptHash || keccak256(output) != record.outputHash {
        return Err(revert(ISettlement::TextMismatch {
            promptHash: record.promptHash,
            outputHash: record.outputHash,
        }));
    }
    Ok(settled_at)
}

fn unavailable(record: &ReceiptRecord, reason: String) -> ModuleError {
    revert(ISettlement::AttributionUnavailable {
        datanetId: record.datanetId,
        version: record.datanetVersion,
        reason,
    })
}

/// Slashes the operator and pays the receipt's contributor pool again, by the recomputed
/// weights, from the slash; half of what is left rewards the challenger, the rest and the
/// rounding dust go to the treasury.
fn resettle(
    s: &mut Storage<'_>,
    id: B256,
    record: &ReceiptRecord,
    challenger: Address,
    ids: Vec<U256>,
    weights: Vec<u32>,
) -> Result<()> {
    let slash = IStaking::slashOperatorCall {
        modelId: record.modelId,
        ppm: CHALLENGE_SLASH_PPM,
        reason: format!("attribution challenge of receipt {id}"),
    };
    let out = s
        .host()
        .call_module(addresses::STAKING, &slash.abi_encode(), U256::ZERO)?;
    let slashed = IStaking::slashOperatorCall::abi_decode_returns(&out)
        .map_err(|e| ModuleError::Fatal(format!("slashOperator returned {e}")))?;
    let pool = record.pool.min(slashed);
    let all_to_pool = Shares {
        creator: 0,
        stakers: 0,
        contributors: PPM,
    };
    let split = fee::split(pool, U256::ZERO, all_to_pool, &weights)
        .map_err(|e| ModuleError::Fatal(format!("recomputed weights: {e}")))?;
    let payees = contributor_payees(
        s,
        record.datanetId,
        record.datanetVersion,
        &ids,
        weights.len(),
    )?;
    for ((account, role), amount) in payees.into_iter().zip(split.contributors) {
        let amount = cut_penalty(s, account, record.modelId, amount)?;
        accrue(s, account, record.modelId, role, amount)?;
    }
    let rest = slashed - pool;
    let to_challenger = rest / U256::from(2);
    let to_treasury = rest - to_challenger + split.treasury;
    s.host().transfer(challenger, to_challenger)?;
    s.host().transfer(addresses::TREASURY, to_treasury)?;
    emit(
        s.host(),
        &ISettlement::Resettled {
            receiptId: id,
            slashed,
            toContributors: pool - split.treasury,
            toChallenger: to_challenger,
            toTreasury: to_treasury,
        },
    )
}
