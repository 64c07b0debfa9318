//! The Settlement module's storage.

use crate::storage::{fields, slots};

slots! {
    /// The parameters: four words, the platform fee, then the creator's, stakers' and
    /// contributors' shares in ppm.
    PARAMS: 4,
    /// `account => escrow`.
    ESCROW,
    /// `account => rewards accrued and not yet claimed`.
    REWARDS,
    /// `account => nonce => used`: orders' nonces, inference and training alike.
    NONCES,
    /// Per receipt id, what a challenge checks ([`record`]).
    RECORDS,
    /// Per account, the escrow unlocking ([`unlock`]).
    UNLOCKING,
    /// Seconds between an unlock of escrow and the withdrawal it allows (genesis
    /// `escrowWithdrawalDelay`): longer than a settlement takes to land, so that escrow a node
    /// admitted a completion against cannot leave before the completion is paid.
    WITHDRAWAL_DELAY,
    /// Per hold id, a training fee held ([`hold`]).
    HOLDS,
    /// Per model, the artifact count that last paid a hold: each new artifact pays one hold.
    PAID_UP_TO,
}

fields! {
    /// Fields of a settled receipt's record.
    mod record {
        /// The hash of the record as settled.
        HASH,
        /// `settledAt | status << 64`.
        STATE,
    }
}

fields! {
    /// Fields of an account's unlocking escrow.
    mod unlock {
        AMOUNT,
        /// When it can be withdrawn.
        RELEASE_AT,
    }
}

fields! {
    /// Fields of a training hold.
    mod hold {
        PAYER,
        TRAINER,
        MODEL,
        AMOUNT,
        ARTIFACTS,
        EXPIRY,
        STATUS,
    }
}
