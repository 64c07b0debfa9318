//! Fixed addresses of the native protocol modules.
//!
//! Each module is a stateful precompile at `0x4f4c…NN` ("OL" followed by the module number), so
//! any Ethereum tool can call it like a contract and its state lives in its own storage slots.

use alloy_primitives::{Address, address};

/// Datanets: curated datasets and their contributions.
pub const DATANETS: Address = address!("0x4f4c000000000000000000000000000000000001");
/// Model registry and lifecycle.
pub const MODELS: Address = address!("0x4f4c000000000000000000000000000000000002");
/// Inference settlement and Proof of Attribution rewards.
pub const SETTLEMENT: Address = address!("0x4f4c000000000000000000000000000000000003");
/// GOPEN, governance-staked OPEN.
pub const GOPEN: Address = address!("0x4f4c000000000000000000000000000000000004");
/// The Governor.
pub const GOVERNOR: Address = address!("0x4f4c000000000000000000000000000000000005");
/// Staking and slashing.
pub const STAKING: Address = address!("0x4f4c000000000000000000000000000000000006");
/// Validator feedback.
pub const FEEDBACK: Address = address!("0x4f4c000000000000000000000000000000000007");
/// The treasury: receives base fees, platform fees and rounding dust.
pub const TREASURY: Address = address!("0x4f4c000000000000000000000000000000000008");

/// Every module address, in module-number order.
pub const ALL: [Address; 8] = [
    DATANETS, MODELS, SETTLEMENT, GOPEN, GOVERNOR, STAKING, FEEDBACK, TREASURY,
];
