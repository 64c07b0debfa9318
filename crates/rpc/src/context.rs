//! What every handler sees, and how the `eth_*` handlers are registered: the leaf that the
//! server, the subscriptions and the dev methods (a `#[rpc]` trait over the same context) share.

use std::{
    collections::HashSet,
    sync::{Arc, atomic::AtomicU64},
};

use alloy_primitives::Address;
use jsonrpsee::{RpcModule, types::Params};
use parking_lot::Mutex;
use serde::Serialize;

use crate::{RpcResult, eth::EthApi, filters::Filters, params::Args};

/// What every handler sees.
#[derive(Debug)]
pub struct RpcContext {
    /// The Ethereum API.
    pub api: EthApi,
    /// Installed polling filters.
    pub filters: Filters,
    /// What the dev methods remember; `None` when they are not served.
    pub dev: Option<DevState>,
}

/// What the dev methods remember between calls.
#[derive(Debug, Default)]
pub struct DevState {
    /// Taken snapshots, oldest first.
    pub(crate) snapshots: Mutex<Vec<Snapshot>>,
    /// The id the next snapshot gets (Hardhat's ids start at 1).
    pub(crate) next_snapshot: AtomicU64,
    /// Accounts `eth_sendTransaction` sends for without a key.
    pub(crate) impersonated: Mutex<HashSet<Address>>,
}

/// The head and clock an `evm_revert` goes back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) id: u64,
    pub(crate) head: u64,
    pub(crate) clock_offset: i64,
}

type Handler<R> = fn(&RpcContext, &mut Args<'_>) -> RpcResult<R>;

/// Registers a cheap method that takes at most `max` parameters and runs on the connection's
/// task.
pub(crate) fn quick<R: Serialize + Clone + Send + 'static>(
    module: &mut RpcModule<RpcContext>,
    name: &'static str,
    max: usize,
    handler: Handler<R>,
) {
    module
        .register_method(name, move |params: Params<'_>, ctx: &RpcContext, _| {
            handler(ctx, &mut Args::new(&params, max)?)
        })
        .expect("method names are unique");
}

/// Registers a method that takes at most `max` parameters and may run long (execution, log
/// scans), on the blocking pool.
pub(crate) fn heavy<R: Serialize + Clone + Send + 'static>(
    module: &mut RpcModule<RpcContext>,
    name: &'static str,
    max: usize,
    handler: Handler<R>,
) {
    module
        .register_blocking_method(name, move |params: Params<'_>, ctx: Arc<RpcContext>, _| {
            handler(&ctx, &mut Args::new(&params, max)?)
        })
        .expect("method names are unique");
}
