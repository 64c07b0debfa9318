//! OpenLedger's native protocol modules.
//!
//! Each module is a stateful precompile at a fixed address (see
//! [`openledger_primitives::addresses`]) with a Solidity interface in `abi/` and a JSON ABI
//! generated from it, so any Ethereum tool or contract can call it.

pub mod abi;
pub mod call;
pub mod datanets;
pub mod feedback;
pub mod gopen;
pub mod governor;
pub mod math;
pub mod models;
pub mod settlement;
pub mod staking;
pub mod state;
pub mod storage;
#[cfg(test)]
mod testing;
pub mod treasury;

use std::sync::Arc;

use openledger_chain::{ModuleError, Modules, NativeModule};

/// What module code returns: a [`ModuleError`] reverts the call with its data, or, when the host
/// itself failed, aborts the block.
pub type Result<T, E = ModuleError> = std::result::Result<T, E>;

/// Every module the node runs, with no attribution oracle: challenges revert as unavailable.
pub fn modules() -> Modules {
    modules_with(settlement::Settlement::default())
}

/// Every module the node runs, challenges recomputed by `oracle`.
pub fn modules_with_oracle(oracle: Arc<dyn settlement::challenge::AttributionOracle>) -> Modules {
    modules_with(settlement::Settlement::with_oracle(oracle))
}

fn modules_with(settlement: settlement::Settlement) -> Modules {
    let all: Vec<Arc<dyn NativeModule>> = vec![
        Arc::new(datanets::Datanets),
        Arc::new(feedback::Feedback),
        Arc::new(gopen::Gopen),
        Arc::new(governor::Governor),
        Arc::new(models::Models),
        Arc::new(settlement),
        Arc::new(staking::Staking),
        Arc::new(treasury::Treasury),
    ];
    Modules::new(all)
}
