//! The JSON-RPC server: one port for HTTP and WebSocket, batches, CORS for browser wallets and
//! dapps, and the registration of every method.

use std::{net::SocketAddr, sync::Arc};

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U128, U256};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_serde::JsonStorageKey;
use jsonrpsee::{
    RpcModule,
    core::middleware::RpcServiceBuilder,
    server::{BatchRequestConfig, Server, ServerConfig, ServerHandle},
};
use openledger_chain::{Chain, ChainEvent};
use tower_http::cors::{Any, CorsLayer};

use crate::{
    RpcConfig,
    context::{DevState, RpcContext, heavy, quick},
    error::{RpcError, RpcResult},
    eth::{DEFAULT_PRIORITY_FEE, EthApi},
    filters::Filters,
    guard::RequestGuardLayer,
    metrics::{Counted, RpcMetrics},
    params::{Args, PrefixedBytes, Quantity},
    pubsub,
};

/// A running server.
#[derive(Debug)]
pub struct RpcServer {
    /// The address it listens on (useful with port 0).
    pub local_addr: SocketAddr,
    /// Requests received, by method.
    pub metrics: Arc<RpcMetrics>,
    /// The same methods, to call in-process (services of the node that would otherwise be
    /// clients of its own port).
    pub methods: jsonrpsee::Methods,
    /// Counters for those in-process calls, by method, apart from the requests received.
    pub in_process: Arc<RpcMetrics>,
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
    let guard = RequestGuardLayer {
        max_request_bytes: config.max_request_bytes,
    };
    let addr = config.addr;
    let module = in_process(chain, config);
    let in_process: jsonrpsee::Methods = module.clone();
    let metrics = Arc::new(RpcMetrics::new(module.method_names()));
    let in_process_metrics = Arc::new(RpcMetrics::new(module.method_names()));
    let counted = metrics.clone();
    let server = Server::builder()
        .set_config(server_config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(cors).layer(guard))
        .set_rpc_middleware(
            RpcServiceBuilder::new()
                .layer_fn(move |inner| Counted {
                    inner,
                    metrics: counted.clone(),
                })
                .layer_fn(|inner| crate::dev::Strict { inner }),
        )
        .build(addr)
        .await?;
    let local_addr = server.local_addr()?;
    let handle = server.start(module);
    Ok(RpcServer {
        local_addr,
        metrics,
        methods: in_process,
        in_process: in_process_metrics,
        handle,
    })
}

/// The methods a server on `config` answers, to call in-process without one (they need a Tokio
/// runtime: filters are fed from the chain's events).
pub fn in_process(chain: Arc<Chain>, config: RpcConfig) -> jsonrpsee::Methods {
    let context = Arc::new(RpcContext {
        dev: config.dev.as_ref().map(|_| DevState::default()),
        api: EthApi::new(chain.clone(), config),
        filters: Filters::default(),
    });
    feed_filters(chain, context.clone());
    methods(context).into()
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

fn methods(context: Arc<RpcContext>) -> RpcModule<RpcContext> {
    let dev = context
        .dev
        .is_some()
        .then(|| crate::dev::Dev(context.clone()));
    let mut m = RpcModule::from_arc(context);
    register_node(&mut m);
    register_state(&mut m);
    register_blocks(&mut m);
    register_transactions(&mut m);
    register_logs(&mut m);
    register_debug(&mut m);
    if let Some(dev) = dev {
        m.merge(crate::dev::DevApiServer::into_rpc(dev))
            .expect("dev method names are unique");
    }
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
    quick(m, "web3_clientVersion", 0, |_, _| {
        Ok(format!("openledger/v{}", env!("CARGO_PKG_VERSION")))
    });
    quick(m, "web3_sha3", 1, |_, p| {
        Ok(alloy_primitives::keccak256(p.required::<Bytes>()?))
    });
    quick(m, "net_version", 0, |c, _| {
        Ok(c.api.chain().chain_id().to_string())
    });
    quick(m, "net_listening", 0, |_, _| Ok(true));
    quick(m, "net_peerCount", 0, |_, _| Ok(U64::ZERO));
    quick(m, "eth_chainId", 0, |c, _| {
        Ok(U64::from(c.api.chain().chain_id()))
    });
    quick(m, "eth_syncing", 0, |_, _| Ok(false));
    quick(m, "eth_mining", 0, |_, _| Ok(true));
    quick(m, "eth_hashrate", 0, |_, _| Ok(U64::ZERO));
    quick(m, "eth_blockNumber", 0, |c, _| {
        Ok(U64::from(c.api.block_number()))
    });
    quick(m, "eth_accounts", 0, |c, _| {
        let dev = c.api.config().dev.iter();
        let accounts: Vec<Address> = dev
            .flat_map(|d| d.signers.iter().map(|s| s.address()))
            .collect();
        Ok(accounts)
    });
    quick(m, "eth_gasPrice", 0, |c, _| {
        Ok(U128::from(c.api.gas_price()))
    });
    quick(m, "eth_maxPriorityFeePerGas", 0, |_, _| {
        Ok(U128::from(DEFAULT_PRIORITY_FEE))
    });
    quick(m, "eth_blobBaseFee", 0, |_, _| Ok(U128::from(1u8)));
    heavy(m, "eth_feeHistory", 3, |c, p| {
        let count: Quantity = p.required()?;
        let newest: BlockNumberOrTag = p.required()?;
        let percentiles: Option<Vec<f64>> = p.optional()?;
        c.api.fee_history(count.get(), newest, percentiles)
    });
}

fn register_state(m: &mut RpcModule<RpcContext>) {
    quick(m, "eth_getBalance", 2, |c, p| {
        c.api.balance(p.required::<Address>()?, p.optional()?)
    });
    quick(m, "eth_getTransactionCount", 2, |c, p| {
        let address = p.required::<Address>()?;
        Ok(U64::from(c.api.transaction_count(address, p.optional()?)?))
    });
    quick(m, "eth_getCode", 2, |c, p| {
        c.api.code(p.required::<Address>()?, p.optional()?)
    });
    quick(m, "eth_getStorageAt", 3, |c, p| {
        let address: Address = p.required()?;
        let slot: JsonStorageKey = p.required()?;
        c.api.storage_at(address, slot, p.optional()?)
    });
    heavy(m, "eth_getProof", 3, |c, p| {
        let address: Address = p.required()?;
        let keys: Vec<JsonStorageKey> = p.required()?;
        c.api.proof(address, keys, p.optional()?)
    });
    heavy(m, "eth_call", 4, |c, p| {
        let request: TransactionRequest = p.required()?;
        let block = p.optional()?;
        no_overrides(p)?;
        c.api.call(request, block)
    });
    heavy(m, "eth_estimateGas", 4, |c, p| {
        let request: TransactionRequest = p.required()?;
        let block = p.optional()?;
        no_overrides(p)?;
        Ok(U64::from(c.api.estimate_gas(request, block)?))
    });
}

/// Refuses the state and block overrides of `eth_call`/`eth_estimateGas` (their third and
/// fourth parameters), which the node does not apply, rather than ignoring them.
fn no_overrides(p: &mut Args<'_>) -> RpcResult<()> {
    for name in ["state overrides", "block overrides"] {
        if p.optional::<serde_json::Value>()?.is_some() {
            return Err(RpcError::InvalidParams(format!("{name} are not supported")));
        }
    }
    Ok(())
}

fn register_blocks(m: &mut RpcModule<RpcContext>) {
    quick(m, "eth_getBlockByNumber", 2, |c, p| {
        let tag: BlockNumberOrTag = p.required()?;
        c.api.block(tag.into(), p.optional()?.unwrap_or(false))
    });
    quick(m, "eth_getBlockByHash", 2, |c, p| {
        let hash: B256 = p.required()?;
        c.api.block(hash.into(), p.optional()?.unwrap_or(false))
    });
    quick(m, "eth_getBlockTransactionCountByNumber", 1, |c, p| {
        let tag: BlockNumberOrTag = p.required()?;
        Ok(c.api.block_transaction_count(tag.into())?.map(U64::from))
    });
    quick(m, "eth_getBlockTransactionCountByHash", 1, |c, p| {
        let hash: B256 = p.required()?;
        Ok(c.api.block_transaction_count(hash.into())?.map(U64::from))
    });
    quick(m, "eth_getUncleCountByBlockNumber", 1, |_, _| Ok(U64::ZERO));
    quick(m, "eth_getUncleCountByBlockHash", 1, |_, _| Ok(U64::ZERO));
    quick(m, "eth_getBlockReceipts", 1, |c, p| {
        c.api.block_receipts(p.required::<BlockId>()?)
    });
}

fn register_transactions(m: &mut RpcModule<RpcContext>) {
    heavy(m, "eth_sendTransaction", 1, |c, p| {
        crate::dev::send_transaction(c, p.required()?)
    });
    quick(m, "eth_sendRawTransaction", 1, |c, p| {
        c.api.send_raw_transaction(p.required::<PrefixedBytes>()?.0)
    });
    quick(m, "eth_getTransactionByHash", 1, |c, p| {
        c.api.transaction_by_hash(p.required::<B256>()?)
    });
    quick(m, "eth_getTransactionByBlockNumberAndIndex", 2, |c, p| {
        let tag: BlockNumberOrTag = p.required()?;
        let index: Quantity = p.required()?;
        c.api
            .transaction_by_block_and_index(tag.into(), index.get())
    });
    quick(m, "eth_getTransactionByBlockHashAndIndex", 2, |c, p| {
        let hash: B256 = p.required()?;
        let index: Quantity = p.required()?;
        c.api
            .transaction_by_block_and_index(hash.into(), index.get())
    });
    quick(m, "eth_getTransactionReceipt", 1, |c, p| {
        c.api.receipt(p.required::<B256>()?)
    });
}

/// geth's `debug_trace*` and parity's `trace_transaction`/`trace_block`: replays, on the
/// blocking pool.
fn register_debug(m: &mut RpcModule<RpcContext>) {
    heavy(m, "debug_traceTransaction", 2, |c, p| {
        let hash: B256 = p.required()?;
        c.api
            .trace_transaction(hash, p.optional()?.unwrap_or_default())
    });
    heavy(m, "debug_traceBlockByNumber", 2, |c, p| {
        let tag: BlockNumberOrTag = p.required()?;
        c.api
            .trace_block(tag.into(), p.optional()?.unwrap_or_default())
    });
    heavy(m, "debug_traceBlockByHash", 2, |c, p| {
        let hash: B256 = p.required()?;
        c.api
            .trace_block(hash.into(), p.optional()?.unwrap_or_default())
    });
    heavy(m, "debug_traceCall", 3, |c, p| {
        let request: TransactionRequest = p.required()?;
        let block = p.optional()?;
        c.api
            .trace_call(request, block, p.optional()?.unwrap_or_default())
    });
    heavy(m, "trace_transaction", 1, |c, p| {
        c.api.parity_trace_transaction(p.required()?)
    });
    heavy(m, "trace_block", 1, |c, p| {
        let tag: BlockNumberOrTag = p.required()?;
        c.api.parity_trace_block(tag.into())
    });
}

fn register_logs(m: &mut RpcModule<RpcContext>) {
    heavy(m, "eth_getLogs", 1, |c, p| {
        c.api.logs(&p.required::<Filter>()?)
    });
    quick(m, "eth_newFilter", 1, |c, p| {
        c.filters.new_logs(&c.api, p.required()?)
    });
    quick(m, "eth_newBlockFilter", 0, |c, _| {
        c.filters.new_blocks(&c.api)
    });
    quick(m, "eth_newPendingTransactionFilter", 1, |c, _| {
        c.filters.new_pending()
    });
    heavy(m, "eth_getFilterChanges", 1, |c, p| {
        c.filters.changes(&c.api, p.required::<U256>()?)
    });
    heavy(m, "eth_getFilterLogs", 1, |c, p| {
        c.filters.logs(&c.api, p.required::<U256>()?)
    });
    quick(m, "eth_uninstallFilter", 1, |c, p| {
        Ok(c.filters.uninstall(p.required::<U256>()?))
    });
}
