//! The Staking module's storage, and what other modules read of it: an operator's stake against
//! the model's minimum, the unbonding period and contributors' penalty cuts.

use crate::Result;
use alloy_primitives::{Address, U256};
use openledger_chain::ModuleHost;
use openledger_primitives::addresses;

use crate::math::{mul_div, ppm_of};
use crate::storage::{Storage, fields, slots};

slots! {
    /// The parameters: seven words in `IStaking.Params` order ([`param`]).
    PARAMS: 7,
    /// `modelId => pool` ([`pool`]).
    POOLS,
    /// `modelId => operator => stake`.
    OPERATOR_STAKE,
    /// `modelId => account => position` ([`position`]).
    POSITIONS,
    /// `account => rewards harvested and not yet paid`.
    CREDITED,
    /// `contributor => penalty score`.
    PENALTY,
    /// `contributionId => whether it was flagged`.
    FLAGGED,
}

fields! {
    /// The parameters, from [`PARAMS`].
    mod param {
        UNBONDING,
        OPERATOR_MIN,
        VOLUME_PPM,
        WINDOW,
        REPORTER_PPM,
        PENALTY_THRESHOLD,
        PENALTY_CUT,
    }
}

fields! {
    /// Fields of a model's pool.
    mod pool {
        BONDED,
        BONDED_SHARES,
        UNBONDING,
        UNBONDING_SHARES,
        REWARD_PER_SHARE,
        VOLUME_PERIOD,
        VOLUME_PREVIOUS,
        VOLUME_CURRENT,
    }
}

fields! {
    /// Fields of a staker's position in a pool.
    mod position {
        SHARES,
        REWARD_DEBT,
        UNBONDING_SHARES,
        RELEASE_AT,
    }
}

/// What settlement and the model registry read of a model's stake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeCheck {
    /// The operator's stake.
    pub stake: U256,
    /// The least it must be.
    pub minimum: U256,
    /// Whether anyone has delegated stake to the model (and so earns its stakers' share).
    pub has_delegators: bool,
}

/// Reads `operator`'s stake in model `id` against the model's minimum.
pub fn stake_check(host: &mut dyn ModuleHost, id: U256, operator: Address) -> Result<StakeCheck> {
    let mut s = Storage::of(host, addresses::STAKING);
    Ok(StakeCheck {
        stake: s.get(OPERATOR_STAKE.at(id).at(operator))?,
        minimum: minimum(&mut s, id)?,
        has_delegators: !s
            .get::<U256>(POOLS.at(id).field(pool::BONDED_SHARES))?
            .is_zero(),
    })
}

/// How long stake waits between an exit request and its withdrawal, in seconds; the Feedback
/// module's validators wait as long.
pub fn unbonding_period(host: &mut dyn ModuleHost) -> Result<u64> {
    Ok(param(&mut Storage::of(host, addresses::STAKING), param::UNBONDING)?.saturating_to())
}

/// The share of `contributor`'s rewards its penalties cut, in ppm.
pub fn reward_cut_ppm(host: &mut dyn ModuleHost, contributor: Address) -> Result<u32> {
    Ok(penalty(&mut Storage::of(host, addresses::STAKING), contributor)?.1)
}

/// Parameter `index` ([`param`]).
pub(crate) fn param(s: &mut Storage<'_>, index: u8) -> Result<U256> {
    s.get(PARAMS.field(index))
}

/// A contributor's penalty score, and the cut of its rewards it makes (ppm).
pub(crate) fn penalty(s: &mut Storage<'_>, contributor: Address) -> Result<(u32, u32)> {
    let score: u32 = s.get::<U256>(PENALTY.at(contributor))?.saturating_to();
    let threshold: u32 = param(s, param::PENALTY_THRESHOLD)?.saturating_to();
    let cut = if threshold > 0 && score >= threshold {
        param(s, param::PENALTY_CUT)?.saturating_to()
    } else {
        0
    };
    Ok((score, cut))
}

/// Volume of the current and previous periods, rolled forward to now.
pub(crate) fn volumes(s: &mut Storage<'_>, id: U256) -> Result<(u64, U256, U256)> {
    let base = POOLS.at(id);
    let window: u64 = param(s, param::WINDOW)?.saturating_to::<u64>().max(1);
    let period = s.host().timestamp() / window;
    let stored: u64 = s.get(base.field(pool::VOLUME_PERIOD))?;
    let previous: U256 = s.get(base.field(pool::VOLUME_PREVIOUS))?;
    let current: U256 = s.get(base.field(pool::VOLUME_CURRENT))?;
    Ok(match period.saturating_sub(stored) {
        0 => (period, previous, current),
        1 => (period, current, U256::ZERO),
        _ => (period, U256::ZERO, U256::ZERO),
    })
}

/// The fee volume of the trailing window: this period's, plus the previous period's weighted
/// by how much of it the window still covers.
pub(crate) fn trailing_volume(s: &mut Storage<'_>, id: U256) -> Result<U256> {
    let (_, previous, current) = volumes(s, id)?;
    let window: u64 = param(s, param::WINDOW)?.saturating_to::<u64>().max(1);
    let left = window - s.host().timestamp() % window;
    Ok(current + mul_div(previous, U256::from(left), U256::from(window)))
}

/// The least stake model `id`'s operator must keep: the base minimum plus a share of its
/// trailing fee volume.
pub(crate) fn minimum(s: &mut Storage<'_>, id: U256) -> Result<U256> {
    let base = param(s, param::OPERATOR_MIN)?;
    let ppm = param(s, param::VOLUME_PPM)?;
    Ok(base + ppm_of(trailing_volume(s, id)?, ppm))
}
