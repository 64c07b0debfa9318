//! Feedback: staked validators rate settled inferences, and the ratings that agree with the
//! stake-weighted consensus earn the receipt's share of the platform fee (see
//! `abi/IFeedback.sol` for the rules).
//!
//! A receipt's ratings are scored once, at finalize, in one pass; their number per receipt is
//! capped at [`MAX_RATINGS`] so that the pass has a bounded cost whoever calls it.

use crate::Result;
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_sol_types::{SolCall, SolValue};
use openledger_chain::{ModuleCall, ModuleError};
use openledger_primitives::{Genesis, addresses};

use crate::{
    abi::{
        IFeedback::{self, IFeedbackCalls, Phase},
        IGovernor::{self, ProposalState},
        IStaking,
    },
    call::{Answer, emit, emitted, native_module, returns, revert},
    governor,
    math::{PPM, ppm_of},
    state::{
        feedback::{
            PARAMS, PROPOSALS, QUALITY, RATINGS, RECEIPTS, VALIDATORS, param, quality, rating,
            receipt, validator,
        },
        is_governance,
        staking::unbonding_period,
    },
    storage::{Slot, Storage, consecutive, struct_words},
};

/// The most validators that may rate one receipt.
pub const MAX_RATINGS: u64 = 64;
const MAX_SCORE: u8 = 100;

native_module! {
    /// The feedback module.
    Feedback at addresses::FEEDBACK, named "feedback", answers IFeedback::IFeedbackCalls,
    payable [registerValidator, recordReceipt], genesis genesis, run run
}

/// The module's storage at genesis, from the genesis file.
fn genesis(genesis: &Genesis) -> Vec<(U256, U256)> {
    let g = &genesis.protocol.feedback;
    let params = IFeedback::Params {
        feeSharePpm: g.fee_share_ppm,
        validatorMinStake: g.validator_min_stake,
        commitWindow: g.commit_window,
        revealWindow: g.reveal_window,
        tolerance: g.tolerance,
        outlierLimit: g.outlier_limit,
        outlierSlashPpm: g.outlier_slash_ppm,
        qualityAlphaPpm: g.quality_alpha_ppm,
        harmfulQuorumPpm: g.harmful_quorum_ppm,
        harmfulSlashPpm: g.harmful_slash_ppm,
    };
    consecutive(PARAMS, struct_words(&params))
}

/// Runs a decoded call on the module's own storage.
fn run(mut s: Storage<'_>, call: &ModuleCall<'_>, decoded: IFeedbackCalls) -> Answer {
    use IFeedbackCalls as C;
    let caller = call.caller;
    match decoded {
        C::registerValidator(_) => register(&mut s, caller, call.value),
        C::requestExit(c) => request_exit(&mut s, caller, c.amount),
        C::withdrawExited(_) => withdraw_exited(&mut s, caller),
        C::rate(c) => rate(&mut s, caller, c.receiptId, c.commitment),
        C::reveal(c) => reveal(&mut s, caller, c),
        C::finalize(c) => finalize(&mut s, c.receiptId),
        C::claim(_) => claim(&mut s, caller),
        C::recordReceipt(c) => record(&mut s, caller, c, call.value),
        C::setParams(c) => set_params(&mut s, caller, c.params),
        C::params(_) => Ok(IFeedback::paramsCall::abi_encode_returns(
            &s.get_struct::<IFeedback::Params>(PARAMS)?,
        )
        .into()),
        C::validatorOf(c) => {
            let v = read_validator(&mut s, c.validator)?;
            Ok(IFeedback::validatorOfCall::abi_encode_returns(&v).into())
        }
        C::receipt(c) => {
            let r = read_receipt(&mut s, c.receiptId)?;
            Ok(IFeedback::receiptCall::abi_encode_returns(&r).into())
        }
        C::ratingOf(c) => {
            let r = read_rating(&mut s, c.receiptId, c.validator)?;
            Ok(IFeedback::ratingOfCall::abi_encode_returns(&r).into())
        }
        C::ratersOf(c) => {
            let raters = raters(&mut s, c.receiptId)?;
            Ok(IFeedback::ratersOfCall::abi_encode_returns(&raters).into())
        }
        C::qualityOf(c) => {
            let base = QUALITY.at(c.modelId);
            let out = IFeedback::qualityOfReturn {
                qualityPpm: s.get(base.field(quality::SCORE))?,
                receipts: s.get(base.field(quality::COUNT))?,
            };
            Ok(IFeedback::qualityOfCall::abi_encode_returns(&out).into())
        }
        C::commitmentOf(c) => Ok(returns(&commitment(
            c.receiptId,
            c.validator,
            c.score,
            c.harmful,
            c.labelsHash,
            c.salt,
        ))),
    }
}

/// The ABI-encoded return data of a call.
type Out = Answer;

/// What a validator commits to: `keccak256(abi.encode(receiptId, validator, score, harmful,
/// labelsHash, salt))`. The receipt and the validator are in it so that a commitment cannot
/// be replayed by someone else or on another receipt.
pub fn commitment(
    receipt_id: B256,
    validator: Address,
    score: u8,
    harmful: bool,
    labels_hash: B256,
    salt: B256,
) -> B256 {
    // A uint8 is encoded as the 32-byte word of its value, as a uint256 would be.
    let score = U256::from(score);
    keccak256((receipt_id, validator, score, harmful, labels_hash, salt).abi_encode_params())
}

fn register(s: &mut Storage<'_>, caller: Address, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IFeedback::ZeroAmount {}));
    }
    let slot = VALIDATORS.at(caller).field(validator::STAKE);
    let stake = s.get::<U256>(slot)? + amount;
    let minimum = param(s, param::MIN_STAKE)?;
    if stake < minimum {
        return Err(revert(IFeedback::StakeBelowMinimum { stake, minimum }));
    }
    s.set(slot, stake)?;
    emitted(
        s.host(),
        &IFeedback::ValidatorStaked {
            validator: caller,
            amount,
            stake,
        },
    )
}

fn request_exit(s: &mut Storage<'_>, caller: Address, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IFeedback::ZeroAmount {}));
    }
    let base = VALIDATORS.at(caller);
    let stake: U256 = s.get(base.field(validator::STAKE))?;
    if amount > stake {
        return Err(revert(IFeedback::InsufficientStake {
            available: stake,
            required: amount,
        }));
    }
    let left = stake - amount;
    let minimum = param(s, param::MIN_STAKE)?;
    if !left.is_zero() && left < minimum {
        return Err(revert(IFeedback::StakeBelowMinimum {
            stake: left,
            minimum,
        }));
    }
    s.set(base.field(validator::STAKE), left)?;
    s.add(base.field(validator::EXITING), amount)?;
    let release = s
        .host()
        .timestamp()
        .saturating_add(unbonding_period(s.host())?);
    s.set(base.field(validator::RELEASE_AT), release)?;
    emitted(
        s.host(),
        &IFeedback::ExitRequested {
            validator: caller,
            amount,
            releaseAt: release,
        },
    )
}

fn withdraw_exited(s: &mut Storage<'_>, caller: Address) -> Out {
    let base = VALIDATORS.at(caller);
    let amount: U256 = s.get(base.field(validator::EXITING))?;
    if amount.is_zero() {
        return Err(revert(IFeedback::NothingExiting {}));
    }
    let release: u64 = s.get(base.field(validator::RELEASE_AT))?;
    let now = s.host().timestamp();
    if now < release {
        return Err(revert(IFeedback::StillExiting {
            releaseAt: release,
            timestamp: now,
        }));
    }
    s.set(base.field(validator::EXITING), U256::ZERO)?;
    s.host().transfer(caller, amount)?;
    emit(
        s.host(),
        &IFeedback::ExitWithdrawn {
            validator: caller,
            amount,
        },
    )?;
    Ok(IFeedback::withdrawExitedCall::abi_encode_returns(&amount).into())
}

fn claim(s: &mut Storage<'_>, caller: Address) -> Out {
    let slot = VALIDATORS.at(caller).field(validator::REWARDS);
    let amount: U256 = s.get(slot)?;
    if amount.is_zero() {
        return Err(revert(IFeedback::NothingToClaim {}));
    }
    s.set(slot, U256::ZERO)?;
    s.host().transfer(caller, amount)?;
    emit(
        s.host(),
        &IFeedback::RewardsClaimed {
            validator: caller,
            amount,
        },
    )?;
    Ok(IFeedback::claimCall::abi_encode_returns(&amount).into())
}

/// When a receipt was settled and when its commit and reveal windows end. They are fixed when
/// it is recorded, so that changing the windows does not move those of open receipts.
#[derive(Debug, Clone, Copy)]
struct Times {
    settled: u64,
    commit_end: u64,
    reveal_end: u64,
}

impl Times {
    fn pack(self) -> U256 {
        U256::from(self.settled)
            | U256::from(self.commit_end) << 64
            | U256::from(self.reveal_end) << 128
    }

    fn unpack(word: U256) -> Self {
        let part = |shift: usize| ((word >> shift) & U256::from(u64::MAX)).to::<u64>();
        Self {
            settled: part(0),
            commit_end: part(64),
            reveal_end: part(128),
        }
    }
}

fn record(
    s: &mut Storage<'_>,
    caller: Address,
    c: IFeedback::recordReceiptCall,
    reward: U256,
) -> Out {
    if caller != addresses::SETTLEMENT {
        return Err(revert(IFeedback::NotSettlement { account: caller }));
    }
    let base = RECEIPTS.at(c.receiptId);
    if !s.get::<U256>(base.field(receipt::TIMES))?.is_zero() {
        return Err(revert(IFeedback::ReceiptExists {
            receiptId: c.receiptId,
        }));
    }
    let settled = s.host().timestamp();
    let commit_end = settled.saturating_add(param(s, param::COMMIT_WINDOW)?.saturating_to::<u64>());
    let reveal_end =
        commit_end.saturating_add(param(s, param::REVEAL_WINDOW)?.saturating_to::<u64>());
    let times = Times {
        settled,
        commit_end,
        reveal_end,
    };
    s.set(base.field(receipt::TIMES), times.pack())?;
    s.set(base.field(receipt::MODEL), c.modelId)?;
    if !reward.is_zero() {
        s.set(base.field(receipt::REWARD), reward)?;
    }
    emitted(
        s.host(),
        &IFeedback::ReceiptRecorded {
            receiptId: c.receiptId,
            modelId: c.modelId,
            promptHash: c.promptHash,
            outputHash: c.outputHash,
            reward,
        },
    )
}

/// Where a receipt stands now.
fn phase(s: &mut Storage<'_>, id: B256) -> Result<Phase> {
    let base = RECEIPTS.at(id);
    let word: U256 = s.get(base.field(receipt::TIMES))?;
    if word.is_zero() {
        return Ok(Phase::Unknown);
    }
    if s.get::<bool>(base.field(receipt::FINALIZED))? {
        return Ok(Phase::Finalized);
    }
    let times = Times::unpack(word);
    let now = s.host().timestamp();
    Ok(if now < times.commit_end {
        Phase::Commit
    } else if now < times.reveal_end {
        Phase::Reveal
    } else {
        Phase::Finalizable
    })
}

/// Reverts unless the receipt exists and is in the `wanted` phase; returns its base slot.
fn require_phase(s: &mut Storage<'_>, id: B256, wanted: Phase) -> Result<Slot> {
    match phase(s, id)? {
        Phase::Unknown => Err(revert(IFeedback::UnknownReceipt { receiptId: id })),
        current if current != wanted => Err(revert(IFeedback::WrongPhase {
            receiptId: id,
            phase: current,
        })),
        _ => Ok(RECEIPTS.at(id)),
    }
}

fn rate(s: &mut Storage<'_>, caller: Address, id: B256, hash: B256) -> Out {
    let base = require_phase(s, id, Phase::Commit)?;
    let stake: U256 = s.get(VALIDATORS.at(caller).field(validator::STAKE))?;
    let minimum = param(s, param::MIN_STAKE)?;
    if stake.is_zero() || stake < minimum {
        return Err(revert(IFeedback::NotValidator {
            account: caller,
            stake,
            minimum,
        }));
    }
    let slot = RATINGS.at(id).at(caller);
    if !s.get::<U256>(slot.field(rating::WEIGHT))?.is_zero() {
        return Err(revert(IFeedback::AlreadyCommitted {
            receiptId: id,
            validator: caller,
        }));
    }
    let list = base.field(receipt::RATERS);
    if s.len(list)? >= MAX_RATINGS {
        return Err(revert(IFeedback::TooManyRatings {
            receiptId: id,
            max: U256::from(MAX_RATINGS),
        }));
    }
    s.push(list, caller)?;
    s.set(slot.field(rating::COMMITMENT), hash)?;
    s.set(slot.field(rating::WEIGHT), stake)?;
    emitted(
        s.host(),
        &IFeedback::RatingCommitted {
            receiptId: id,
            validator: caller,
            weight: stake,
        },
    )
}

fn reveal(s: &mut Storage<'_>, caller: Address, c: IFeedback::revealCall) -> Out {
    let id = c.receiptId;
    require_phase(s, id, Phase::Reveal)?;
    if c.score > MAX_SCORE {
        return Err(revert(IFeedback::InvalidScore { score: c.score }));
    }
    let slot = RATINGS.at(id).at(caller);
    if s.get::<U256>(slot.field(rating::WEIGHT))?.is_zero() {
        return Err(revert(IFeedback::NotCommitted {
            receiptId: id,
            validator: caller,
        }));
    }
    if s.get::<bool>(slot.field(rating::REVEALED))? {
        return Err(revert(IFeedback::AlreadyRevealed {
            receiptId: id,
            validator: caller,
        }));
    }
    let expected: B256 = s.get(slot.field(rating::COMMITMENT))?;
    if commitment(id, caller, c.score, c.harmful, c.labelsHash, c.salt) != expected {
        return Err(revert(IFeedback::CommitmentMismatch {
            receiptId: id,
            validator: caller,
        }));
    }
    s.set(slot.field(rating::REVEALED), true)?;
    s.set(slot.field(rating::SCORE), c.score)?;
    s.set(slot.field(rating::HARMFUL), c.harmful)?;
    s.set(slot.field(rating::LABELS), c.labelsHash)?;
    emitted(
        s.host(),
        &IFeedback::RatingRevealed {
            receiptId: id,
            validator: caller,
            score: c.score,
            harmful: c.harmful,
            labelsHash: c.labelsHash,
        },
    )
}

/// The stake-weighted lower median of the revealed scores: the least score at or below which
/// lies at least half of the revealed stake. `None` when nothing was revealed.
pub fn weighted_median(ratings: &[(u8, U256)]) -> Option<u8> {
    let mut sorted = ratings.to_vec();
    sorted.sort_unstable_by_key(|&(score, _)| score);
    let total: U256 = sorted.iter().map(|&(_, weight)| weight).sum();
    let mut below = U256::ZERO;
    for (score, weight) in sorted {
        below += weight;
        if below * U256::from(2) >= total && !below.is_zero() {
            return Some(score);
        }
    }
    None
}

fn finalize(s: &mut Storage<'_>, id: B256) -> Out {
    let base = require_phase(s, id, Phase::Finalizable)?;
    let mut ratings = Vec::new();
    for account in raters(s, id)? {
        ratings.push((account, read_rating(s, id, account)?));
    }
    let revealed: Vec<_> = ratings
        .iter()
        .filter(|(_, r)| r.revealed)
        .map(|(_, r)| (r.score, r.weight))
        .collect();
    let median = weighted_median(&revealed);
    let tolerance: u8 = param(s, param::TOLERANCE)?.saturating_to();
    let accepted = |r: &IFeedback::Rating| {
        r.revealed && median.is_some_and(|m| r.score.abs_diff(m) <= tolerance)
    };
    let count = ratings.iter().filter(|(_, r)| accepted(r)).count() as u64;
    let reward: U256 = s.get(base.field(receipt::REWARD))?;
    let each = reward.checked_div(U256::from(count)).unwrap_or_default();
    let dust = reward - each * U256::from(count);
    if !dust.is_zero() {
        s.host().transfer(addresses::TREASURY, dust)?;
    }
    for (account, r) in &ratings {
        score_rating(s, id, *account, r, accepted(r).then_some(each))?;
    }
    let model: U256 = s.get(base.field(receipt::MODEL))?;
    let quality = match median {
        Some(m) => update_quality(s, model, m)?,
        None => s.get(QUALITY.at(model).field(quality::SCORE))?,
    };
    s.set(base.field(receipt::FINALIZED), true)?;
    s.set(base.field(receipt::MEDIAN), median.unwrap_or_default())?;
    emit(
        s.host(),
        &IFeedback::Finalized {
            receiptId: id,
            modelId: model,
            median: median.unwrap_or_default(),
            accepted: count as u32,
            rewardEach: each,
            qualityPpm: quality,
        },
    )?;
    let stake_of = |harmful_only: bool| -> U256 {
        ratings
            .iter()
            .filter(|(_, r)| r.revealed && (r.harmful || !harmful_only))
            .map(|(_, r)| r.weight)
            .sum()
    };
    flag_harmful(s, id, model, stake_of(true), stake_of(false))?;
    Ok(Bytes::new())
}

/// Pays an accepted rating its `reward`, or counts an outlier against its validator.
fn score_rating(
    s: &mut Storage<'_>,
    id: B256,
    account: Address,
    r: &IFeedback::Rating,
    reward: Option<U256>,
) -> Result<()> {
    let base = VALIDATORS.at(account);
    let mut streak = 0;
    if let Some(amount) = reward {
        s.add(base.field(validator::REWARDS), amount)?;
    } else {
        streak = s.get::<u32>(base.field(validator::STREAK))? + 1;
        let limit: u32 = param(s, param::OUTLIER_LIMIT)?.saturating_to();
        if limit > 0 && streak >= limit {
            slash_validator(s, account)?;
            streak = 0;
        }
    }
    s.set(base.field(validator::STREAK), streak)?;
    emit(
        s.host(),
        &IFeedback::RatingScored {
            receiptId: id,
            validator: account,
            accepted: reward.is_some(),
            score: r.score,
            harmful: r.harmful,
            labelsHash: r.labelsHash,
            reward: reward.unwrap_or_default(),
            outlierStreak: streak,
        },
    )
}

/// Takes `outlierSlashPpm` of the validator's stake, bonded first, then exiting, to the
/// treasury.
fn slash_validator(s: &mut Storage<'_>, account: Address) -> Result<()> {
    let base = VALIDATORS.at(account);
    let stake: U256 = s.get(base.field(validator::STAKE))?;
    let exiting: U256 = s.get(base.field(validator::EXITING))?;
    let amount = ppm_of(stake + exiting, param(s, param::OUTLIER_SLASH)?);
    let from_stake = amount.min(stake);
    s.set(base.field(validator::STAKE), stake - from_stake)?;
    s.set(
        base.field(validator::EXITING),
        exiting - (amount - from_stake),
    )?;
    s.host().transfer(addresses::TREASURY, amount)?;
    emit(
        s.host(),
        &IFeedback::ValidatorSlashed {
            validator: account,
            amount,
        },
    )
}

/// Moves the model's quality score toward `median`; returns the new score in ppm.
fn update_quality(s: &mut Storage<'_>, model: U256, median: u8) -> Result<u32> {
    let base = QUALITY.at(model);
    let ppm = u64::from(PPM);
    let target = u64::from(median) * (ppm / u64::from(MAX_SCORE));
    let count: u64 = s.get(base.field(quality::COUNT))?;
    let score = if count == 0 {
        target
    } else {
        let old: u64 = s.get(base.field(quality::SCORE))?;
        let alpha: u64 = param(s, param::QUALITY_ALPHA)?
            .saturating_to::<u64>()
            .min(ppm);
        (old * (ppm - alpha) + target * alpha) / ppm
    };
    s.set(base.field(quality::SCORE), score)?;
    s.set(base.field(quality::COUNT), count + 1)?;
    Ok(score as u32)
}

/// Proposes to slash the model if enough of the revealed stake flagged the output harmful.
fn flag_harmful(
    s: &mut Storage<'_>,
    id: B256,
    model: U256,
    harmful: U256,
    revealed: U256,
) -> Result<()> {
    let quorum = param(s, param::HARMFUL_QUORUM)?;
    if harmful.is_zero() || harmful * U256::from(PPM) < quorum * revealed {
        return Ok(());
    }
    let proposal = propose_slash(s, id, model, (harmful, revealed))?;
    emit(
        s.host(),
        &IFeedback::HarmfulFlagged {
            receiptId: id,
            modelId: model,
            harmfulStake: harmful,
            revealedStake: revealed,
            proposalId: proposal,
        },
    )
}

/// The open slashing proposal this module made for the model, or a new one (zero when
/// `harmfulSlashPpm` is zero or the Governor refuses it: finalizing never depends on it).
fn propose_slash(
    s: &mut Storage<'_>,
    id: B256,
    model: U256,
    (harmful, revealed): (U256, U256),
) -> Result<U256> {
    let slot = PROPOSALS.at(model);
    let last: U256 = s.get(slot)?;
    if !last.is_zero() {
        let state = governor::state(&mut Storage::of(s.host(), addresses::GOVERNOR), last)?;
        use ProposalState as P;
        if matches!(state, P::Pending | P::Active | P::Succeeded | P::Queued) {
            return Ok(last);
        }
    }
    let ppm: u32 = param(s, param::HARMFUL_SLASH)?.saturating_to();
    if ppm == 0 {
        return Ok(U256::ZERO);
    }
    let slash = IStaking::slashCall {
        modelId: model,
        ppm,
        reason: format!("validators flagged the output of receipt {id} as harmful"),
        beneficiary: Address::ZERO,
    };
    let propose = IGovernor::proposeCall {
        targets: vec![addresses::STAKING],
        values: vec![U256::ZERO],
        calldatas: vec![slash.abi_encode().into()],
        description: format!(
            "# Slash model {model} by {ppm} ppm\n\nValidators holding {harmful} of the {revealed} \
             wei of stake that revealed ratings of receipt {id} flagged its output as harmful. \
             The Feedback module made this proposal."
        ),
    };
    match s
        .host()
        .call_module(addresses::GOVERNOR, &propose.abi_encode(), U256::ZERO)
    {
        Ok(output) => {
            let proposal = IGovernor::proposeCall::abi_decode_returns(&output)
                .map_err(|e| ModuleError::Fatal(format!("Governor.propose returned {e}")))?;
            s.set(slot, proposal)?;
            Ok(proposal)
        }
        Err(ModuleError::Revert(_)) => Ok(U256::ZERO),
        Err(other) => Err(other),
    }
}

fn raters(s: &mut Storage<'_>, id: B256) -> Result<Vec<Address>> {
    s.items(RECEIPTS.at(id).field(receipt::RATERS), 0, MAX_RATINGS)
}

fn read_rating(s: &mut Storage<'_>, id: B256, account: Address) -> Result<IFeedback::Rating> {
    s.get_struct(RATINGS.at(id).at(account))
}

fn read_receipt(s: &mut Storage<'_>, id: B256) -> Result<IFeedback::Receipt> {
    let base = RECEIPTS.at(id);
    let times = Times::unpack(s.get(base.field(receipt::TIMES))?);
    Ok(IFeedback::Receipt {
        modelId: s.get(base.field(receipt::MODEL))?,
        settledAt: times.settled,
        commitEnd: times.commit_end,
        revealEnd: times.reveal_end,
        reward: s.get(base.field(receipt::REWARD))?,
        phase: phase(s, id)?,
        ratings: s.len(base.field(receipt::RATERS))? as u32,
        median: s.get(base.field(receipt::MEDIAN))?,
    })
}

fn read_validator(s: &mut Storage<'_>, account: Address) -> Result<IFeedback::Validator> {
    s.get_struct(VALIDATORS.at(account))
}

fn set_params(s: &mut Storage<'_>, caller: Address, p: IFeedback::Params) -> Out {
    if !is_governance(s.host(), caller)? {
        return Err(revert(IFeedback::NotGovernance { account: caller }));
    }
    let ppms = [
        p.feeSharePpm,
        p.outlierSlashPpm,
        p.qualityAlphaPpm,
        p.harmfulQuorumPpm,
        p.harmfulSlashPpm,
    ];
    if let Some(&bad) = ppms.iter().find(|&&ppm| ppm > PPM) {
        return Err(revert(IFeedback::InvalidPpm {
            ppm: U256::from(bad),
        }));
    }
    s.set_struct(PARAMS, &p)?;
    emitted(s.host(), &IFeedback::ParamsSet { params: p })
}

#[cfg(test)]
mod tests;
