//! The services that run OpenLedger's loop beside the chain, and how they reach it.
//!
//! The services are clients of the chain: they read module state and submit signed
//! transactions, like any wallet. They do it through an alloy provider over one of the
//! [`transport`]s: the node's own JSON-RPC methods called in-process in `openledger dev` (no
//! loopback HTTP) and HTTP JSON-RPC when they run apart from the node. [`client::Client`] gives
//! them (and the CLI) typed module calls over either.
//!
//! - [`indexer`]: builds the span index of every approved datanet version;
//! - [`trainer`]: training jobs on datanet versions, registered as the model's artifact versions;
//! - [`ledger`]: admits, attributes and settles every completion OpenLoRA serves
//!   ([`openlora`]), holding escrow for it ([`holds`]) until the settlement batcher
//!   ([`settler`]) has it on-chain;
//! - [`shared`]: what they share, and [`services::start`], which wires them.

pub mod adapters;
pub mod client;
pub mod compute;
pub mod holds;
pub mod index;
pub mod indexer;
pub mod influence;
pub mod jobs;
pub mod ledger;
pub mod openlora;
pub mod services;
pub mod settler;
pub mod shared;
pub mod signing;
pub mod trainer;
pub mod transport;

#[cfg(test)]
mod testing;
