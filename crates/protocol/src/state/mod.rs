//! Every module's storage, declared once: the slots and struct fields of each module's account
//! (numbered by [`slots!`](crate::storage::slots) and [`fields!`](crate::storage::fields), never
//! by hand), and the typed views other modules read of it.
//!
//! Each file here belongs to the module of its name, the only one that writes that account.
//! A module reads another's state through the views only, so the modules depend on this layer
//! and on no other module's internals, and renumbering a slot moves every reader with it.

pub mod datanets;
pub mod feedback;
pub mod gopen;
pub mod governor;
pub mod models;
pub mod settlement;
pub mod staking;

use crate::Result;
use alloy_primitives::Address;
use openledger_chain::ModuleHost;
use openledger_primitives::addresses;

/// Whether `account` may call the protocol's privileged functions: the Governor, or the
/// genesis admin while one is configured.
pub fn is_governance(host: &mut dyn ModuleHost, account: Address) -> Result<bool> {
    if account == addresses::GOVERNOR {
        return Ok(true);
    }
    let admin = models::admin(host)?;
    Ok(!admin.is_zero() && admin == account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Slot;

    /// Chains already running keep their state at these slots: a declaration inserted in the
    /// middle of a layout, rather than appended, moves every slot after it and fails here.
    #[test]
    fn layouts_keep_the_slots_running_chains_use() {
        let last = [
            (datanets::CONTENT_IN, 24),
            (datanets::ACCESS_PARAMS, 17),
            (feedback::PROPOSALS, 14),
            (gopen::TOTAL_CHECKPOINTS, 5),
            (governor::NONCES, 9),
            (models::MODELS, 2),
            (settlement::PAID_UP_TO, 11),
            (settlement::RECORDS, 7),
            (staking::FLAGGED, 12),
        ];
        for (slot, root) in last {
            assert_eq!(slot, Slot::root(root));
        }
        let fields = [
            (datanets::datanet::APPROVAL_REQUIRED, 17),
            (datanets::request::REQUESTED_AT, 6),
            (feedback::rating::LABELS, 5),
            (governor::field::QUORUM_PPM, 13),
            (models::field::ARTIFACTS, 15),
            (settlement::hold::STATUS, 6),
            (staking::pool::VOLUME_CURRENT, 7),
        ];
        for (field, offset) in fields {
            assert_eq!(field, offset);
        }
    }
}
