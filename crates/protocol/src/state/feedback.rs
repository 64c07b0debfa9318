//! The Feedback module's storage, and what settlement reads of it: the part of a platform fee
//! that funds validators' rewards.

use crate::Result;
use alloy_primitives::U256;
use openledger_chain::ModuleHost;
use openledger_primitives::addresses;

use crate::math::ppm_of;
use crate::storage::{Storage, fields, slots};

slots! {
    /// The parameters: ten words in `IFeedback.Params` order ([`param`]).
    PARAMS: 10,
    /// `validator => fields below`.
    VALIDATORS,
    /// `receiptId => fields below`.
    RECEIPTS,
    /// `receiptId => validator => fields below`.
    RATINGS,
    /// `modelId => fields below`.
    QUALITY,
    /// `modelId => the last slashing proposal this module made for it`.
    PROPOSALS,
}

fields! {
    /// The parameters, from [`PARAMS`].
    mod param {
        FEE_SHARE,
        MIN_STAKE,
        COMMIT_WINDOW,
        REVEAL_WINDOW,
        TOLERANCE,
        OUTLIER_LIMIT,
        OUTLIER_SLASH,
        QUALITY_ALPHA,
        HARMFUL_QUORUM,
        HARMFUL_SLASH,
    }
}

fields! {
    /// Fields of a validator, in the order of `IFeedback.Validator`, which is read whole.
    mod validator {
        STAKE,
        EXITING,
        RELEASE_AT,
        STREAK,
        REWARDS,
    }
}

fields! {
    /// Fields of a rated receipt.
    mod receipt {
        /// Settlement time and the ends of both windows, packed in one word (see `Times`).
        TIMES,
        MODEL,
        REWARD,
        FINALIZED,
        MEDIAN,
        /// The array of validators who committed.
        RATERS,
    }
}

fields! {
    /// Fields of a validator's rating of a receipt, in the order of `IFeedback.Rating`, which is
    /// read whole.
    mod rating {
        COMMITMENT,
        WEIGHT,
        REVEALED,
        SCORE,
        HARMFUL,
        LABELS,
    }
}

fields! {
    /// Fields of a model's quality score.
    mod quality {
        SCORE,
        COUNT,
    }
}

/// Parameter `index` ([`param`]).
pub(crate) fn param(s: &mut Storage<'_>, index: u8) -> Result<U256> {
    s.get(PARAMS.field(index))
}

/// The part of a platform fee that funds the feedback reward of the settled receipt.
pub fn reward_for(host: &mut dyn ModuleHost, platform_fee: U256) -> Result<U256> {
    let share = param(
        &mut Storage::of(host, addresses::FEEDBACK),
        param::FEE_SHARE,
    )?;
    Ok(ppm_of(platform_fee, share))
}
