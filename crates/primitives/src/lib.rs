//! Shared types of the OpenLedger node.
//!
//! Everything here is plain data that every other crate agrees on: how OPEN amounts are written,
//! where the native modules live, and what a genesis file says. Keeping these in one small crate
//! lets the chain, the RPC server and the AI services depend on the same definitions without
//! depending on each other.

pub mod addresses;
pub mod genesis;
pub mod open;
pub mod protocol;

pub use alloy_primitives::{Address, B256, Bytes, U256, address, b256, keccak256};
pub use genesis::{DEV_CHAIN_ID, Genesis, GenesisAccount, GenesisError};
pub use open::{OPEN, OPEN_DECIMALS, format_open};
pub use protocol::ProtocolParams;
