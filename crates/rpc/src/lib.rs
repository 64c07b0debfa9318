//! Ethereum JSON-RPC for the OpenLedger chain, so MetaMask, viem, web3.py, Hardhat and Foundry
//! work against it unchanged.
//!
//! HTTP and WebSocket share one port; batches are accepted up to a limit; expensive requests
//! (log ranges, proofs, call gas) are bounded with clear errors.

pub mod context;
pub mod convert;
pub mod dev;
pub mod error;
pub mod eth;
pub mod filters;
pub mod guard;
pub mod metrics;
pub mod params;
pub mod pubsub;
pub mod server;
pub mod trace;

use std::net::SocketAddr;

use alloy_signer_local::PrivateKeySigner;

pub use error::{RpcError, RpcResult};
pub use eth::EthApi;
pub use server::{RpcServer, in_process, start};

/// Settings of the JSON-RPC server; every limit has a default that suits a dev node.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// Listen address (HTTP and WebSocket).
    pub addr: SocketAddr,
    /// A dev chain's extras; `None` on any other chain.
    pub dev: Option<DevRpc>,
    /// Most requests in one batch.
    pub max_batch: u32,
    /// Most blocks one `eth_getLogs` may scan.
    pub max_log_block_range: u64,
    /// Most logs one `eth_getLogs` may return.
    pub max_logs: usize,
    /// Gas limit of `eth_call` when none or a higher one is given.
    pub call_gas_cap: u64,
    /// Most storage keys in one `eth_getProof`.
    pub max_proof_keys: usize,
    /// Largest request body.
    pub max_request_bytes: u32,
    /// Largest response body.
    pub max_response_bytes: u32,
    /// Most simultaneous connections.
    pub max_connections: u32,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8545)),
            dev: None,
            max_batch: 1_000,
            max_log_block_range: 10_000,
            max_logs: 20_000,
            call_gas_cap: 50_000_000,
            max_proof_keys: 1_000,
            max_request_bytes: 10 * 1024 * 1024,
            max_response_bytes: 100 * 1024 * 1024,
            max_connections: 1_000,
        }
    }
}

/// What a dev chain's JSON-RPC adds: anvil's and Hardhat's methods (clock, mining, state edits,
/// snapshots, impersonation), and the dev keys that `eth_accounts` lists and
/// `eth_sendTransaction` signs with.
#[derive(Debug, Clone, Default)]
pub struct DevRpc {
    /// The dev accounts' keys.
    pub signers: Vec<PrivateKeySigner>,
}
