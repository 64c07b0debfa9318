//! The GOPEN module's storage.

use crate::storage::slots;

slots! {
    TOTAL_SUPPLY,
    /// `account => balance`.
    BALANCES,
    /// `owner => spender => allowance`.
    ALLOWANCES,
    /// `account => the delegate its votes go to`.
    DELEGATES,
    /// `account => Checkpoint[]`, one packed word each: the value above the 48-bit key.
    CHECKPOINTS,
    /// The total supply's checkpoints, as [`CHECKPOINTS`].
    TOTAL_CHECKPOINTS,
}
