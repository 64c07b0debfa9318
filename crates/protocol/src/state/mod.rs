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

use alloy_primitives::Address;
use openledger_chain::{ModuleError, ModuleHost};
use openledger_primitives::addresses;

/// Whether `account` may call the protocol's privileged functions: the Governor, or the
/// genesis admin while one is configured.
pub fn is_governance(host: &mut dyn ModuleHost, account: Address) -> Result<bool, ModuleError> {
    if account == addresses::GOVERNOR {
        return Ok(true);
    }
    let admin = models::admin(host)?;
    Ok(!admin.is_zero() && admin == account)
}
