//! The JSON-RPC server: one port for HTTP and WebSocket, batches, CORS for browser wallets and
//! dapps, and the registration of every method.

use std::{net::SocketAddr, sync::Arc};

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U128, U256};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_serde::JsonStorageKey;
use jsonrpsee::{
    RpcModule,
    server::{BatchRequestConfig, Server, ServerConfig, ServerHandle},
    types::{ErrorObjectOwned, Params, params::ParamsSequence},
};
use openledger_chain::{Chain, ChainEvent};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tower_http::cors::{Any, CorsLayer};

use crate::{
    RpcConfig,
    error::{RpcError, RpcResult},
    eth::{DEFAULT_PRIORITY_FEE, EthApi},
    filters::Filters,
    pubsub,
};

/// What every handler sees.
#[derive(Debug)]
pub struct RpcContext {
    /// The Ethereum API.
    pub api: EthApi,
    /// Installed polling filters.
    pub filters: Filters,
}

/// A running server.
#[derive(Debug)]
pub struct RpcServer {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    handle: ServerHandle,
}

impl RpcServer {
    /// Stops the server and waits until it has stopped.
    pub async fn stop(self) {
        let _ = self.handle.stop();
        self.handle.stopped().await;
    }

    /// Resolves when the server stops.
    pub async fn stopped(self) {
        self.handle.stopped().await
    }
}

/// Starts serving `chain` on `config.addr`.
pub async fn start(chain: Arc<Chain>, config: RpcConfig) -> std::io::Result<RpcServer> {
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_bytes)
        .max_response_body_size(config.max_response_bytes)
        .max_connections(config.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch))
        .set_id_provider(pubsub::HexIdProvider::default())
        .build();
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any);
    let server = Server::builder()
        .set_config(server_config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(cors))
        .build(config.addr)
        .await?;
    let local_addr = server.local_addr()?;
    let context = Arc::new(RpcContext {
        api: EthApi::new(chain.clone(), config),
        filters: Filters::default(),
    });
    feed_filters(chain, context.clone());
    let module = methods(context);
    let handle = server.start(module);
    Ok(RpcServer { local_addr, handle })
}

/// Forwards pool arrivals to pending-transaction filters.
fn feed_filters(chain: Arc<Chain>, context: Arc<RpcContext>) {
    let mut events = chain.subscribe();
    let weak = Arc::downgrade(&context);
    drop(context);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ChainEvent::PendingTransaction(hash)) => match weak.upgrade() {
                    Some(ctx) => ctx.filters.on_pending(hash),
                    None => return,
                },
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// A quantity given as a JSON number or a hex string (clients send both).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(u64),
    Hex(U64),
}

impl Quantity {
    fn get(self) -> u64 {
        match self {
            Quantity::Number(n) => n,
            Quantity::Hex(n) => n.to(),
        }
    }
}

fn invalid(e: ErrorObjectOwned) -> RpcError {
    RpcError::InvalidParams(e.message().to_string())
}

fn next<T: DeserializeOwned>(seq: &mut ParamsSequence<'_>) -> RpcResult<T> {
    seq.next().map_err(invalid)
}

fn optional<T: DeserializeOwned>(seq: &mut ParamsSequence<'_>) -> RpcResult<Option<T>> {
    seq.optional_next().map_err(invalid)
}

type Handler<R> = fn(&RpcContext, &mut ParamsSequence<'_>) -> RpcResult<R>;

/// Registers a cheap method that runs on the connection's task.
fn quick<R: Serialize + Clone + Send + 'static>(
    module: &mut RpcModule<RpcContext>,
    name: &'static str,
    handler: Handler<R>,
) {
    module
        .register_method(name, move |params: Params<'_>, ctx: &RpcContext, _| {
            handler(ctx, &mut params.sequence())
        })
        .expect("method names are unique");
}

/// Registers a method that may run long (execution, log scans) on the blocking pool.
fn heavy<R: Serialize + Clone + Send + 'static>(
    module: &mut RpcModule<RpcContext>,
    name: &'static str,
    handler: Handler<R>,
) {
    module
        .register_blocking_method(name, move |params: Params<'_>, ctx: Arc<RpcContext>, _| {
            handler(&ctx, &mut params.sequence())
        })
        .expect("method names are unique");
}

fn methods(context: Arc<RpcContext>) -> RpcModule<RpcContext> {
    let mut m = RpcModule::from_arc(context);
    register_node(&mut m);
    register_state(&mut m);
    register_blocks(&mut m);
    register_transactions(&mut m);
    register_logs(&mut m);
    register_dev(&mut m);
    m.register_subscription(
        "eth_subscribe",
        "eth_subscription",
        "eth_unsubscribe",
        |params, pending, ctx, _| pubsub::subscribe(params, pending, ctx),
    )
    .expect("subscription names are unique");
    m
}

fn register_node(m: &mut RpcModule<RpcContext>) {
    quick(m, "web3_clientVersion", |_, _| {
        Ok(format!("openledger/v{}", env!("CARGO_PKG_VERSION")))
    });
    quick(m, "web3_sha3", |_, p| {
        Ok(alloy_primitives::keccak256(next::<Bytes>(p)?))
    });
    quick(m, "net_version", |c, _| {
        Ok(c.api.chain().chain_id().to_string())
    });
    quick(m, "net_listening", |_, _| Ok(true));
    quick(m, "net_peerCount", |_, _| Ok(U64::ZERO));
    quick(m, "eth_chainId", |c, _| {
        Ok(U64::from(c.api.chain().chain_id()))
    });
    quick(m, "eth_syncing", |_, _| Ok(false));
    quick(m, "eth_mining", |_, _| Ok(true));
    quick(m, "eth_hashrate", |_, _| Ok(U64::ZERO));
    quick(m, "eth_blockNumber", |c, _| {
        Ok(U64::from(c.api.block_number()))
    });
    quick(m, "eth_accounts", |c, _| {
        Ok(c.api.config().accounts.clone())
    });
    quick(m, "eth_gasPrice", |c, _| Ok(U128::from(c.api.gas_price())));
    quick(m, "eth_maxPriorityFeePerGas", |_, _| {
        Ok(U128::from(DEFAULT_PRIORITY_FEE))
    });
    quick(m, "eth_blobBaseFee", |_, _| Ok(U128::from(1u8)));
    heavy(m, "eth_feeHistory", |c, p| {
        let count: Quantity = next(p)?;
        let newest: BlockNumberOrTag = next(p)?;
        let percentiles: Option<Vec<f64>> = optional(p)?;
        c.api.fee_history(count.get(), newest, percentiles)
    });
}

fn register_state(m: &mut RpcModule<RpcContext>) {
    quick(m, "eth_getBalance", |c, p| {
        c.api.balance(next(p)?, optional(p)?)
    });
    quick(m, "eth_getTransactionCount", |c, p| {
        Ok(U64::from(c.api.transaction_count(next(p)?, optional(p)?)?))
    });
    quick(m, "eth_getCode", |c, p| c.api.code(next(p)?, optional(p)?));
    quick(m, "eth_getStorageAt", |c, p| {
        let address: Address = next(p)?;
        let slot: JsonStorageKey = next(p)?;
        c.api.storage_at(address, slot, optional(p)?)
    });
    heavy(m, "eth_getProof", |c, p| {
        let address: Address = next(p)?;
        let keys: Vec<JsonStorageKey> = next(p)?;
        c.api.proof(address, keys, optional(p)?)
    });
    heavy(m, "eth_call", |c, p| {
        let request: TransactionRequest = next(p)?;
        c.api.call(request, optional(p)?)
    });
    heavy(m, "eth_estimateGas", |c, p| {
        let request: TransactionRequest = next(p)?;
        Ok(U64::from(c.api.estimate_gas(request, optional(p)?)?))
    });
}

fn register_blocks(m: &mut RpcModule<RpcContext>) {
    quick(m, "eth_getBlockByNumber", |c, p| {
        let tag: BlockNumberOrTag = next(p)?;
        c.api.block(tag.into(), optional(p)?.unwrap_or(false))
    });
    quick(m, "eth_getBlockByHash", |c, p| {
        let hash: B256 = next(p)?;
        c.api.block(hash.into(), optional(p)?.unwrap_or(false))
    });
    quick(m, "eth_getBlockTransactionCountByNumber", |c, p| {
        let tag: BlockNumberOrTag = next(p)?;
        Ok(c.api.block_transaction_count(tag.into())?.map(U64::from))
    });
    quick(m, "eth_getBlockTransactionCountByHash", |c, p| {
        let hash: B256 = next(p)?;
        Ok(c.api.block_transaction_count(hash.into())?.map(U64::from))
    });
    quick(m, "eth_getUncleCountByBlockNumber", |_, _| Ok(U64::ZERO));
    quick(m, "eth_getUncleCountByBlockHash", |_, _| Ok(U64::ZERO));
    quick(m, "eth_getBlockReceipts", |c, p| {
        c.api.block_receipts(next::<BlockId>(p)?)
    });
}

fn register_transactions(m: &mut RpcModule<RpcContext>) {
    quick(m, "eth_sendRawTransaction", |c, p| {
        c.api.send_raw_transaction(next(p)?)
    });
    quick(m, "eth_getTransactionByHash", |c, p| {
        c.api.transaction_by_hash(next(p)?)
    });
    quick(m, "eth_getTransactionByBlockNumberAndIndex", |c, p| {
        let tag: BlockNumberOrTag = next(p)?;
        let index: Quantity = next(p)?;
        c.api
            .transaction_by_block_and_index(tag.into(), index.get())
    });
    quick(m, "eth_getTransactionByBlockHashAndIndex", |c, p| {
        let hash: B256 = next(p)?;
        let index: Quantity = next(p)?;
        c.api
            .transaction_by_block_and_index(hash.into(), index.get())
    });
    quick(m, "eth_getTransactionReceipt", |c, p| {
        c.api.receipt(next(p)?)
    });
}

/// Hardhat's and anvil's clock controls, so that a dev chain's time-locked steps (voting
/// periods, unbonding) can be exercised without waiting.
fn register_dev(m: &mut RpcModule<RpcContext>) {
    quick(m, "evm_increaseTime", |c, p| {
        let seconds: Quantity = next(p)?;
        Ok(c.api.chain().advance_clock(seconds.get()))
    });
    heavy(m, "evm_mine", |c, p| {
        let timestamp: Option<Quantity> = optional(p)?;
        let chain = c.api.chain();
        chain.produce_block(timestamp.map_or_else(|| chain.now(), Quantity::get))?;
        Ok("0x0")
    });
}

fn register_logs(m: &mut RpcModule<RpcContext>) {
    heavy(m, "eth_getLogs", |c, p| c.api.logs(&next::<Filter>(p)?));
    quick(m, "eth_newFilter", |c, p| {
        c.filters.new_logs(&c.api, next(p)?)
    });
    quick(m, "eth_newBlockFilter", |c, _| c.filters.new_blocks(&c.api));
    quick(m, "eth_newPendingTransactionFilter", |c, _| {
        c.filters.new_pending()
    });
    heavy(m, "eth_getFilterChanges", |c, p| {
        c.filters.changes(&c.api, next::<U256>(p)?)
    });
    heavy(m, "eth_getFilterLogs", |c, p| {
        c.filters.logs(&c.api, next::<U256>(p)?)
    });
    quick(m, "eth_uninstallFilter", |c, p| {
        Ok(c.filters.uninstall(next::<U256>(p)?))
    });
}
