//! Staking: the collateral behind every served model, the stakers' share of its fees, slashing
//! and contributor penalties (see `abi/IStaking.sol` for the rules).
//!
//! Delegated stake is held as shares of a per-model pool, and so is unbonding stake, so that
//! both slashing (the pool loses OPEN, every share loses value) and rewards (a reward-per-share
//! accumulator) cost the same whatever the number of stakers: no loop ever runs over them.

use crate::Result;
use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::SolCall;
use openledger_chain::{ModuleCall, ModuleError};
use openledger_primitives::{Genesis, addresses};

use crate::{
    abi::{
        IModels::{self, Status},
        IStaking::{self, IStakingCalls},
    },
    call::{Answer, check_len, emit, emitted, native_module, returns, revert},
    math::{PPM, mul_div, ppm_of},
    state::{
        datanets::{contribution_info, datanet_info},
        is_governance,
        models::{ModelInfo, model_info},
        staking::{
            CREDITED, FLAGGED, OPERATOR_STAKE, PARAMS, PENALTY, POOLS, POSITIONS, minimum, param,
            penalty, pool, position, trailing_volume, unbonding_period, volumes,
        },
    },
    storage::{Slot, Storage, consecutive, struct_words},
};

/// Scale of the reward-per-share accumulator.
const PRECISION: U256 = U256::from_limbs([0xb34b9f1000000000, 0x00c097ce7bc90715, 0, 0]);
const MAX_REASON: usize = 1024;

native_module! {
    /// The staking module.
    Staking at addresses::STAKING, named "staking", answers IStaking::IStakingCalls,
    payable [stake, stakeOperator, notifyFee], genesis genesis, run run
}

/// The module's storage at genesis, from the genesis file.
fn genesis(genesis: &Genesis) -> Vec<(U256, U256)> {
    let p = &genesis.protocol.staking;
    let params = IStaking::Params {
        unbondingPeriod: p.unbonding_period,
        operatorMinStake: p.operator_min_stake,
        operatorVolumePpm: p.operator_volume_ppm,
        volumeWindow: p.volume_window,
        reporterSharePpm: p.reporter_share_ppm,
        penaltyThreshold: p.penalty_threshold,
        penaltyCutPpm: p.penalty_cut_ppm,
    };
    consecutive(PARAMS, struct_words(&params))
}

/// Runs a decoded call on the module's own storage.
fn run(mut s: Storage<'_>, call: &ModuleCall<'_>, decoded: IStakingCalls) -> Answer {
    use IStakingCalls as C;
    let caller = call.caller;
    match decoded {
        C::stake(c) => stake(&mut s, caller, c.modelId, call.value),
        C::requestUnstake(c) => request_unstake(&mut s, caller, c.modelId, c.amount),
        C::stakeOperator(c) => stake_operator(&mut s, caller, c.modelId, call.value),
        C::requestOperatorUnstake(c) => {
            request_operator_unstake(&mut s, caller, c.modelId, c.amount)
        }
        C::withdrawUnbonded(c) => withdraw_unbonded(&mut s, caller, c.modelId),
        C::claim(c) => claim(&mut s, caller, c.modelId),
        C::notifyFee(c) => notify_fee(&mut s, caller, c.modelId, c.fee, call.value),
        C::slash(c) => slash(&mut s, caller, c),
        C::slashOperator(c) => slash_operator(&mut s, caller, c),
        C::flagContribution(c) => flag(&mut s, caller, c.contributionId, c.reason),
        C::setParams(c) => set_params(&mut s, caller, c.params),
        C::params(_) => Ok(IStaking::paramsCall::abi_encode_returns(
            &s.get_struct::<IStaking::Params>(PARAMS)?,
        )
        .into()),
        C::modelStake(c) => {
            let stake = model_stake(&mut s, c.modelId)?;
            Ok(IStaking::modelStakeCall::abi_encode_returns(&stake).into())
        }
        C::minimumStake(c) => Ok(returns(&minimum(&mut s, c.modelId)?)),
        C::operatorStake(c) => Ok(returns(
            &s.get::<U256>(OPERATOR_STAKE.at(c.modelId).at(c.operator))?,
        )),
        C::positionOf(c) => {
            let position = read_position(&mut s, c.modelId, c.account)?;
            Ok(IStaking::positionOfCall::abi_encode_returns(&position).into())
        }
        C::pendingRewards(c) => Ok(returns(&pending(&mut s, c.modelId, c.account)?)),
        C::penaltyOf(c) => {
            let (score, cut) = penalty(&mut s, c.contributor)?;
            Ok(
                IStaking::penaltyOfCall::abi_encode_returns(&IStaking::penaltyOfReturn {
                    score,
                    cutPpm: cut,
                })
                .into(),
            )
        }
    }
}

/// The ABI-encoded return data of a call.
type Out = Answer;

/// Reverts unless the model exists and may still take stake.
fn open_model(s: &mut Storage<'_>, id: U256) -> Result<Status> {
    let model =
        model_info(s.host(), id)?.ok_or_else(|| revert(IStaking::UnknownModel { modelId: id }))?;
    if matches!(model.status, Status::Retired | Status::Slashed) {
        return Err(revert(IStaking::ModelClosed { modelId: id }));
    }
    Ok(model.status)
}

fn stake(s: &mut Storage<'_>, caller: Address, id: U256, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IStaking::ZeroAmount {}));
    }
    open_model(s, id)?;
    let base = POOLS.at(id);
    let new_shares = shares_for(s, id, base.field(pool::BONDED), amount)?;
    harvest(s, id, caller)?;
    let slot = POSITIONS.at(id).at(caller);
    let shares = s.add(slot.field(position::SHARES), new_shares)?;
    s.add(base.field(pool::BONDED), amount)?;
    s.add(base.field(pool::BONDED_SHARES), new_shares)?;
    reset_debt(s, id, slot, shares)?;
    emitted(
        s.host(),
        &IStaking::Staked {
            modelId: id,
            account: caller,
            amount,
            shares: new_shares,
        },
    )
}

/// Shares `amount` buys in the pool whose amount is at `amount_slot` (its shares follow it).
fn shares_for(s: &mut Storage<'_>, id: U256, amount_slot: Slot, amount: U256) -> Result<U256> {
    let total: U256 = s.get(amount_slot)?;
    let shares: U256 = s.get(amount_slot.field(1))?;
    if shares.is_zero() {
        return Ok(amount);
    }
    if total.is_zero() {
        return Err(revert(IStaking::PoolWiped { modelId: id }));
    }
    Ok(amount * shares / total)
}

fn request_unstake(s: &mut Storage<'_>, caller: Address, id: U256, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IStaking::ZeroAmount {}));
    }
    let base = POOLS.at(id);
    let slot = POSITIONS.at(id).at(caller);
    let shares: U256 = s.get(slot.field(position::SHARES))?;
    let bonded: U256 = s.get(base.field(pool::BONDED))?;
    let total_shares: U256 = s.get(base.field(pool::BONDED_SHARES))?;
    let available = mul_div(shares, bonded, total_shares);
    if amount > available {
        return Err(revert(IStaking::InsufficientStake {
            available,
            required: amount,
        }));
    }
    // Rounded up, so that leaving never takes more than the shares are worth.
    let burn = (amount * total_shares).div_ceil(bonded).min(shares);
    harvest(s, id, caller)?;
    s.set(slot.field(position::SHARES), shares - burn)?;
    s.set(base.field(pool::BONDED), bonded - amount)?;
    s.set(base.field(pool::BONDED_SHARES), total_shares - burn)?;
    reset_debt(s, id, slot, shares - burn)?;
    let release = start_unbonding(s, id, slot, amount)?;
    emitted(
        s.host(),
        &IStaking::UnstakeRequested {
            modelId: id,
            account: caller,
            amount,
            releaseAt: release,
        },
    )
}

/// Puts `amount` into the model's unbonding pool for the position at `slot`; returns when it
/// can be withdrawn.
fn start_unbonding(s: &mut Storage<'_>, id: U256, slot: Slot, amount: U256) -> Result<u64> {
    let base = POOLS.at(id);
    let new_shares = shares_for(s, id, base.field(pool::UNBONDING), amount)?;
    s.add(base.field(pool::UNBONDING), amount)?;
    s.add(base.field(pool::UNBONDING_SHARES), new_shares)?;
    s.add(slot.field(position::UNBONDING_SHARES), new_shares)?;
    let period = unbonding_period(s.host())?;
    let release = s.host().timestamp().saturating_add(period);
    s.set(slot.field(position::RELEASE_AT), release)?;
    Ok(release)
}

fn stake_operator(s: &mut Storage<'_>, caller: Address, id: U256, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IStaking::ZeroAmount {}));
    }
    open_model(s, id)?;
    let total = s.add(OPERATOR_STAKE.at(id).at(caller), amount)?;
    emitted(
        s.host(),
        &IStaking::OperatorStaked {
            modelId: id,
            operator: caller,
            amount,
            total,
        },
    )
}

fn request_operator_unstake(s: &mut Storage<'_>, caller: Address, id: U256, amount: U256) -> Out {
    if amount.is_zero() {
        return Err(revert(IStaking::ZeroAmount {}));
    }
    let stake_slot = OPERATOR_STAKE.at(id).at(caller);
    let available: U256 = s.get(stake_slot)?;
    if amount > available {
        return Err(revert(IStaking::InsufficientStake {
            available,
            required: amount,
        }));
    }
    s.set(stake_slot, available - amount)?;
    let release = start_unbonding(s, id, POSITIONS.at(id).at(caller), amount)?;
    emitted(
        s.host(),
        &IStaking::OperatorUnstakeRequested {
            modelId: id,
            operator: caller,
            amount,
            releaseAt: release,
        },
    )
}

fn withdraw_unbonded(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    let base = POOLS.at(id);
    let slot = POSITIONS.at(id).at(caller);
    let shares: U256 = s.get(slot.field(position::UNBONDING_SHARES))?;
    if shares.is_zero() {
        return Err(revert(IStaking::NothingUnbonding {}));
    }
    let release: u64 = s.get(slot.field(position::RELEASE_AT))?;
    let now = s.host().timestamp();
    if now < release {
        return Err(revert(IStaking::StillUnbonding {
            releaseAt: release,
            timestamp: now,
        }));
    }
    let total: U256 = s.get(base.field(pool::UNBONDING))?;
    let total_shares: U256 = s.get(base.field(pool::UNBONDING_SHARES))?;
    let amount = mul_div(shares, total, total_shares);
    s.set(base.field(pool::UNBONDING), total - amount)?;
    s.set(base.field(pool::UNBONDING_SHARES), total_shares - shares)?;
    s.set(slot.field(position::UNBONDING_SHARES), U256::ZERO)?;
    s.host().transfer(caller, amount)?;
    emit(
        s.host(),
        &IStaking::Unbonded {
            modelId: id,
            account: caller,
            amount,
        },
    )?;
    Ok(IStaking::withdrawUnbondedCall::abi_encode_returns(&amount).into())
}

/// Moves the position's earned rewards into its credited balance.
fn harvest(s: &mut Storage<'_>, id: U256, account: Address) -> Result<()> {
    let earned = pending(s, id, account)?;
    if !earned.is_zero() {
        s.add(CREDITED.at(account), earned)?;
    }
    Ok(())
}

/// Rewards the position earned since its debt was last reset.
fn pending(s: &mut Storage<'_>, id: U256, account: Address) -> Result<U256> {
    let slot = POSITIONS.at(id).at(account);
    let shares: U256 = s.get(slot.field(position::SHARES))?;
    let debt: U256 = s.get(slot.field(position::REWARD_DEBT))?;
    let per_share: U256 = s.get(POOLS.at(id).field(pool::REWARD_PER_SHARE))?;
    Ok((shares * per_share / PRECISION).saturating_sub(debt))
}

/// Starts the position's earnings afresh. The debt is rounded up and earnings down, so that
/// the payouts never add up to more than was distributed, however often positions change.
fn reset_debt(s: &mut Storage<'_>, id: U256, slot: Slot, shares: U256) -> Result<()> {
    let per_share: U256 = s.get(POOLS.at(id).field(pool::REWARD_PER_SHARE))?;
    s.set(
        slot.field(position::REWARD_DEBT),
        (shares * per_share).div_ceil(PRECISION),
    )
}

fn claim(s: &mut Storage<'_>, caller: Address, id: U256) -> Out {
    harvest(s, id, caller)?;
    let slot = POSITIONS.at(id).at(caller);
    let shares: U256 = s.get(slot.field(position::SHARES))?;
    reset_debt(s, id, slot, shares)?;
    let amount: U256 = s.get(CREDITED.at(caller))?;
    if amount.is_zero() {
        return Err(revert(IStaking::NothingToClaim {}));
    }
    s.set(CREDITED.at(caller), U256::ZERO)?;
    s.host().transfer(caller, amount)?;
    emit(
        s.host(),
        &IStaking::RewardsClaimed {
            account: caller,
            amount,
        },
    )?;
    Ok(IStaking::claimCall::abi_encode_returns(&amount).into())
}

fn notify_fee(s: &mut Storage<'_>, caller: Address, id: U256, fee: U256, reward: U256) -> Out {
    if caller != addresses::SETTLEMENT {
        return Err(revert(IStaking::NotSettlement { account: caller }));
    }
    record_volume(s, id, fee)?;
    if reward.is_zero() {
        return Ok(Bytes::new());
    }
    let base = POOLS.at(id);
    let shares: U256 = s.get(base.field(pool::BONDED_SHARES))?;
    if shares.is_zero() {
        // Settlement sends the stakers' share only to models with stakers.
        return Err(ModuleError::Fatal(format!("model {id} has no stakers")));
    }
    let increment = reward * PRECISION / shares;
    s.add(base.field(pool::REWARD_PER_SHARE), increment)?;
    let dust = reward - increment * shares / PRECISION;
    s.host().transfer(addresses::TREASURY, dust)?;
    emitted(
        s.host(),
        &IStaking::RewardsDistributed {
            modelId: id,
            amount: reward,
            fee,
        },
    )
}

fn record_volume(s: &mut Storage<'_>, id: U256, fee: U256) -> Result<()> {
    let (period, previous, current) = volumes(s, id)?;
    let base = POOLS.at(id);
    s.set(base.field(pool::VOLUME_PERIOD), period)?;
    s.set(base.field(pool::VOLUME_PREVIOUS), previous)?;
    s.set(base.field(pool::VOLUME_CURRENT), current + fee)
}

/// The model a slash of `ppm` for `reason` applies to, once both are checked.
fn slashed_model(s: &mut Storage<'_>, id: U256, ppm: u32, reason: &str) -> Result<ModelInfo> {
    if ppm == 0 || ppm > PPM {
        return Err(revert(IStaking::InvalidPpm {
            ppm: U256::from(ppm),
        }));
    }
    check_len(reason, MAX_REASON, too_long, "reason")?;
    model_info(s.host(), id)?.ok_or_else(|| revert(IStaking::UnknownModel { modelId: id }))
}

fn slash(s: &mut Storage<'_>, caller: Address, c: IStaking::slashCall) -> Out {
    if !is_governance(s.host(), caller)? {
        return Err(revert(IStaking::NotGovernance { account: caller }));
    }
    let id = c.modelId;
    let model = slashed_model(s, id, c.ppm, &c.reason)?;
    let base = POOLS.at(id);
    let op_slot = OPERATOR_STAKE.at(id).at(model.operator);
    let operator: U256 = s.get(op_slot)?;
    let bonded: U256 = s.get(base.field(pool::BONDED))?;
    let unbonding: U256 = s.get(base.field(pool::UNBONDING))?;
    let amount = ppm_of(operator + bonded + unbonding, U256::from(c.ppm));
    let from_operator = amount.min(operator);
    let from_delegators = amount - from_operator;
    let from_bonded = mul_div(from_delegators, bonded, bonded + unbonding);
    s.set(op_slot, operator - from_operator)?;
    s.set(base.field(pool::BONDED), bonded - from_bonded)?;
    s.set(
        base.field(pool::UNBONDING),
        unbonding - (from_delegators - from_bonded),
    )?;
    let to_beneficiary = if c.beneficiary.is_zero() {
        U256::ZERO
    } else {
        ppm_of(amount, param(s, param::REPORTER_PPM)?)
    };
    s.host().transfer(c.beneficiary, to_beneficiary)?;
    s.host()
        .transfer(addresses::TREASURY, amount - to_beneficiary)?;
    emit(
        s.host(),
        &IStaking::Slashed {
            modelId: id,
            ppm: U256::from(c.ppm),
            fromOperator: from_operator,
            fromDelegators: from_delegators,
            toBeneficiary: to_beneficiary,
            toTreasury: amount - to_beneficiary,
            beneficiary: c.beneficiary,
            reason: c.reason,
        },
    )?;
    mark_if_under_collateralised(s, id, model.status, operator - from_operator)?;
    Ok(Bytes::new())
}

/// A deployed model whose operator's stake fell below the minimum is marked Slashed.
fn mark_if_under_collateralised(
    s: &mut Storage<'_>,
    id: U256,
    status: Status,
    operator_stake: U256,
) -> Result<()> {
    if status == Status::Deployed && operator_stake < minimum(s, id)? {
        let call = IModels::markSlashedCall { modelId: id }.abi_encode();
        s.host().call_module(addresses::MODELS, &call, U256::ZERO)?;
    }
    Ok(())
}

/// Settlement's penalty for a settled attribution a challenge proved wrong: `ppm` of the
/// operator's own stake (delegators did not settle it), sent to Settlement to re-pay the
/// contributors.
fn slash_operator(s: &mut Storage<'_>, caller: Address, c: IStaking::slashOperatorCall) -> Out {
    if caller != addresses::SETTLEMENT {
        return Err(revert(IStaking::NotSettlement { account: caller }));
    }
    let id = c.modelId;
    let model = slashed_model(s, id, c.ppm, &c.reason)?;
    let op_slot = OPERATOR_STAKE.at(id).at(model.operator);
    let operator: U256 = s.get(op_slot)?;
    let amount = ppm_of(operator, U256::from(c.ppm));
    s.set(op_slot, operator - amount)?;
    s.host().transfer(caller, amount)?;
    emit(
        s.host(),
        &IStaking::Slashed {
            modelId: id,
            ppm: U256::from(c.ppm),
            fromOperator: amount,
            fromDelegators: U256::ZERO,
            toBeneficiary: amount,
            toTreasury: U256::ZERO,
            beneficiary: caller,
            reason: c.reason,
        },
    )?;
    mark_if_under_collateralised(s, id, model.status, operator - amount)?;
    Ok(IStaking::slashOperatorCall::abi_encode_returns(&amount).into())
}

fn flag(s: &mut Storage<'_>, caller: Address, contribution: U256, reason: String) -> Out {
    check_len(&reason, MAX_REASON, too_long, "reason")?;
    let info = contribution_info(s.host(), contribution)?.ok_or_else(|| {
        revert(IStaking::UnknownContribution {
            contributionId: contribution,
        })
    })?;
    let owner = datanet_info(s.host(), info.datanet_id)?.map(|(owner, _)| owner);
    if owner != Some(caller) && !is_governance(s.host(), caller)? {
        return Err(revert(IStaking::NotCurator {
            contributionId: contribution,
            account: caller,
        }));
    }
    let flagged = FLAGGED.at(contribution);
    if s.get::<bool>(flagged)? {
        return Err(revert(IStaking::AlreadyFlagged {
            contributionId: contribution,
        }));
    }
    s.set(flagged, true)?;
    let score = s.add(PENALTY.at(info.contributor), U256::from(1))?;
    emitted(
        s.host(),
        &IStaking::ContributionFlagged {
            contributionId: contribution,
            contributor: info.contributor,
            by: caller,
            penaltyScore: score.saturating_to(),
            reason,
        },
    )
}

fn set_params(s: &mut Storage<'_>, caller: Address, p: IStaking::Params) -> Out {
    if !is_governance(s.host(), caller)? {
        return Err(revert(IStaking::NotGovernance { account: caller }));
    }
    for ppm in [p.operatorVolumePpm, p.reporterSharePpm, p.penaltyCutPpm] {
        if ppm > PPM {
            return Err(revert(IStaking::InvalidPpm {
                ppm: U256::from(ppm),
            }));
        }
    }
    s.set_struct(PARAMS, &p)?;
    emitted(s.host(), &IStaking::ParamsSet { params: p })
}

fn model_stake(s: &mut Storage<'_>, id: U256) -> Result<IStaking::ModelStake> {
    let model =
        model_info(s.host(), id)?.ok_or_else(|| revert(IStaking::UnknownModel { modelId: id }))?;
    let base = POOLS.at(id);
    Ok(IStaking::ModelStake {
        operator: model.operator,
        operatorStake: s.get(OPERATOR_STAKE.at(id).at(model.operator))?,
        minimumStake: minimum(s, id)?,
        delegated: s.get(base.field(pool::BONDED))?,
        unbonding: s.get(base.field(pool::UNBONDING))?,
        trailingVolume: trailing_volume(s, id)?,
    })
}

fn read_position(s: &mut Storage<'_>, id: U256, account: Address) -> Result<IStaking::Position> {
    let base = POOLS.at(id);
    let slot = POSITIONS.at(id).at(account);
    let shares: U256 = s.get(slot.field(position::SHARES))?;
    let unbonding_shares: U256 = s.get(slot.field(position::UNBONDING_SHARES))?;
    Ok(IStaking::Position {
        bonded: mul_div(
            shares,
            s.get(base.field(pool::BONDED))?,
            s.get(base.field(pool::BONDED_SHARES))?,
        ),
        shares,
        unbonding: mul_div(
            unbonding_shares,
            s.get(base.field(pool::UNBONDING))?,
            s.get(base.field(pool::UNBONDING_SHARES))?,
        ),
        releaseAt: s.get(slot.field(position::RELEASE_AT))?,
        pendingRewards: pending(s, id, account)? + s.get::<U256>(CREDITED.at(account))?,
    })
}

fn too_long(field: String, max: usize) -> IStaking::TooLong {
    IStaking::TooLong {
        field,
        max: U256::from(max),
    }
}

#[cfg(test)]
mod tests;
