//! The OpenLedger chain: an EVM-compatible chain whose gas token is OPEN.
//!
//! - [`store`]: the durable redb store (blocks, receipts, indexes, state and its history).
//! - [`trie`]: the Ethereum Merkle-Patricia trie, updated incrementally.
//! - [`state`], [`diff`]: state reads, and the per-block overlay that produces a state diff.
//! - [`evm`]: execution with revm under Prague rules, with fees routed by chain parameter.
//! - [`modules`]: the seam where native protocol modules plug in as stateful precompiles.
//! - [`mempool`], [`validation`]: the transaction pool and admission checks.
//! - [`chain`], [`miner`], [`clock`]: the chain handle, the block producer and its clock.
//! - [`trace`]: past transactions and calls replayed under geth-compatible tracers.

pub mod block;
pub mod chain;
pub mod clock;
pub mod diff;
mod error;
pub mod evm;
pub mod mempool;
pub mod miner;
pub mod modules;
pub mod state;
pub mod statetest;
pub mod store;
pub mod trace;
pub mod trie;
pub mod validation;
pub mod verify;

pub use block::{BlockInfo, SealedHeader};
pub use chain::{CallError, CallResult, Chain, ChainConfig, ChainError, ChainEvent, SubmitError};
pub use modules::{
    HostEnv, JournalHost, ModuleCall, ModuleError, ModuleHost, Modules, NativeModule,
};
pub use store::{Store, StoreError, StoreReader};
