//! `openledger dev`: the embedded default. A single-node chain with an embedded store and the
//! JSON-RPC server on loopback, ready in seconds.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use alloy_signer_local::PrivateKeySigner;
use anyhow::Context;
use clap::Args;
use openledger_chain::{Chain, ChainConfig, Store, mempool::PoolLimits, miner};
use openledger_content::{AdapterStore, ContentStore, PendingUploads};
use openledger_flywheel::adapters::Adapters;
use openledger_flywheel::index::registry::IndexRegistry;
use openledger_flywheel::services;
use openledger_flywheel::shared::TrainingTerms;
use openledger_flywheel::shared::{BaseModel, Flywheel};
use openledger_flywheel::{client::Client, transport::InProcess};
use openledger_primitives::{DEV_CHAIN_ID, Genesis, format_open};
use openledger_rpc::{DevRpc, RpcConfig};

use crate::{
    accounts::{DERIVATION_PATH, DEV_MNEMONIC, DevAccount, dev_accounts},
    content_api::{self, ContentApi},
    datadir::{DataDir, default_datadir},
    http::{self, HttpLimits},
};

/// Options of `openledger dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory (created if missing). Restarting on the same directory resumes the chain.
    /// [default: <user data dir>/openledger/dev]
    #[arg(long, value_name = "DIR")]
    datadir: Option<PathBuf>,
    /// JSON-RPC listen address, for HTTP and WebSocket alike.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8545", value_parser = crate::http::listen_addr)]
    rpc_addr: SocketAddr,
    /// Content API listen address (datanet file uploads and reads).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8580", value_parser = crate::http::listen_addr)]
    api_addr: SocketAddr,
    /// Largest datanet file the content API accepts, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    max_upload_mib: u64,
    /// Seconds between blocks; 0 seals a block as soon as a transaction arrives.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    block_time: f64,
    /// Genesis file (JSON) instead of the built-in dev genesis.
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Block gas limit of the built-in dev genesis (a genesis file sets its own).
    #[arg(long, value_name = "GAS", default_value_t = 30_000_000)]
    gas_limit: u64,
    /// Base model the AI services use (tokenizer for span indexes, training jobs, serving): a
    /// checkpoint directory, a GGUF file, or a model `model get` installed (smollm2)
    /// [default: the dev base model, built when first needed]
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
    /// Number of dev accounts to derive, print and fund (built-in genesis only).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    accounts: u32,
    /// Allow a non-loopback --rpc-addr or --api-addr although the dev keys (which sign
    /// `eth_sendTransaction`, and stand behind `Authorization: Bearer dev-N`) then let anyone who
    /// reaches them sign as the dev accounts and spend their funds and escrow.
    #[arg(long)]
    expose_dev_keys: bool,
    /// Another node's content API (http://HOST:PORT) to fetch a deployed model's adapter from,
    /// by the hash registered on-chain, when this node holds none; may be repeated.
    #[arg(long, value_name = "URL", value_parser = peer_url)]
    adapter_peer: Vec<String>,
    /// What a training job costs, in OPEN per 1,000 training tokens (its rows' tokens times its
    /// epochs), held from the creator's escrow before it is queued and paid to
    /// --trainer-account once it registers an adapter; 0 trains for free.
    #[arg(long, value_name = "OPEN", default_value = "0", value_parser = crate::cli::parse_open)]
    training_price: alloy_primitives::U256,
    /// The dev account training fees are paid to.
    #[arg(long, value_name = "N", default_value_t = 0)]
    trainer_account: usize,
}

/// Runs the dev node until Ctrl-C or SIGTERM.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let longest = openledger_chain::clock::MAX_BLOCK_INTERVAL.as_secs_f64();
    let time = args.block_time;
    if !(time.is_finite() && (time == 0.0 || (0.001..=longest).contains(&time))) {
        anyhow::bail!(
            "--block-time must be 0 (a block as transactions arrive) or a number of seconds from \
             0.001 to {longest} (a year)"
        );
    }
    check_exposure(args.rpc_addr, args.api_addr, args.expose_dev_keys)?;
    let accounts = dev_accounts(args.accounts)?;
    let genesis = match &args.genesis {
        Some(path) => Genesis::load(path)?,
        None => {
            let addresses: Vec<_> = accounts.iter().map(|a| a.address).collect();
            Genesis {
                gas_limit: args.gas_limit,
                ..Genesis::dev(DEV_CHAIN_ID, &addresses)
            }
        }
    };
    genesis.validate()?;
    let datadir_path = args
        .datadir
        .clone()
        .unwrap_or_else(|| default_datadir("dev"));
    let datadir = DataDir::open(&datadir_path)?;
    let (chain, content, indexes) = open_chain(&datadir, genesis, args.max_upload_mib << 20)?;
    let adapters = Adapters::new(content.adapters.clone(), args.adapter_peer.clone())?;
    if args.trainer_account >= accounts.len() {
        anyhow::bail!(
            "--trainer-account {} is not a dev account: there are {} (0 to {})",
            args.trainer_account,
            accounts.len(),
            accounts.len() - 1
        );
    }
    let most = openledger_primitives::OPEN * alloy_primitives::U256::from(1_000_000);
    if args.training_price > most {
        anyhow::bail!(
            "--training-price {} OPEN is more than 1,000,000 OPEN per 1,000 training tokens",
            format_open(args.training_price)
        );
    }
    let training = TrainingTerms {
        price_per_1k: args.training_price,
        trainer: args.trainer_account,
    };

    let datadir_shown = datadir.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addrs = (args.rpc_addr, args.api_addr);
        let block_time = Duration::from_secs_f64(args.block_time);
        let keys = accounts
            .iter()
            .map(|a| PrivateKeySigner::from_bytes(&a.key))
            .collect::<Result<Vec<_>, _>>()?;
        let chain_id = chain.chain_id();
        let services = Services::start(
            chain.clone(),
            content,
            keys.clone(),
            addrs,
            block_time,
            flywheel(
                BaseModel::new(args.base.clone(), crate::factory::base_or_dev),
                indexes,
                keys,
                chain_id,
                datadir_shown.clone(),
                (adapters, training),
            ),
        )
        .await?;
        print_banner(
            &chain,
            &accounts,
            &args,
            &datadir_shown,
            (services.rpc_addr, services.api_addr),
        );
        shutdown_signal().await;
        tracing::info!("shutting down");
        services.stop().await;
        anyhow::Ok(())
    })?;
    // A training job runs on a blocking thread that only stops between steps: the node does not
    // wait for it (the job is queued again at the next start), nor for anything else for long.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    drop(datadir);
    Ok(())
}

/// The flywheel's services (indexer, trainer, ledger and settler, OpenLoRA), to start beside
/// the content API as [`Services::start`]'s `more`; `accounts` are the dev keys API keys stand
/// for, and `adapters` those the content API stores (with the peers missing ones come from).
pub(crate) fn flywheel(
    base: BaseModel,
    indexes: Arc<IndexRegistry>,
    accounts: Vec<PrivateKeySigner>,
    chain_id: u64,
    datadir: PathBuf,
    (adapters, training): (Adapters, TrainingTerms),
) -> impl FnOnce(Client, ContentAccess) -> anyhow::Result<axum::Router> {
    move |chain, api| {
        services::start(Flywheel {
            chain,
            api_url: api.url,
            api_token: api.token,
            base,
            indexes,
            accounts,
            chain_id,
            datadir,
            adapters,
            training,
        })
    }
}

/// A peer's content API address: an http(s) URL.
fn peer_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "{text:?} is not an http(s) URL of a node's content API, like http://10.0.0.2:8580"
        ));
    }
    Ok(text.to_string())
}

/// How long a stopping node waits for its tasks once the services have stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Refuses a content API address other machines can reach unless the user said so: its dev API
/// keys are public knowledge (`dev-0`…), so anyone reaching it could sign as the dev accounts.
fn check_exposure(
    rpc_addr: SocketAddr,
    api_addr: SocketAddr,
    expose_dev_keys: bool,
) -> anyhow::Result<()> {
    let exposed = [
        (
            "--rpc-addr",
            rpc_addr,
            "eth_sendTransaction, which the node signs with the dev keys",
        ),
        (
            "--api-addr",
            api_addr,
            "the dev API keys (`Authorization: Bearer dev-N`)",
        ),
    ];
    for (flag, addr, what) in exposed {
        if addr.ip().is_loopback() {
            continue;
        }
        if !expose_dev_keys {
            anyhow::bail!(
                "{flag} {addr} is not a loopback address: anyone who reaches it could use {what} \
                 to sign as the dev accounts and spend their funds and escrow. Use 127.0.0.1, or \
                 pass --expose-dev-keys if that is what you want"
            );
        }
        tracing::warn!(%addr, "the dev keys are usable on a non-loopback address (--expose-dev-keys)");
    }
    Ok(())
}

/// Opens the chain in `datadir` with the protocol modules, its content store, and the span
/// indexes Settlement recomputes challenged attributions with.
pub(crate) fn open_chain(
    datadir: &DataDir,
    genesis: Genesis,
    max_upload_bytes: u64,
) -> anyhow::Result<(Arc<Chain>, Content, Arc<IndexRegistry>)> {
    let indexes = Arc::new(IndexRegistry::new(datadir.attribution_dir()));
    let store = Store::open(&datadir.chain_db()).with_context(|| {
        format!(
            "cannot open the chain store in {}",
            datadir.path().display()
        )
    })?;
    let config = ChainConfig {
        genesis,
        modules: openledger_protocol::modules_with_oracle(indexes.clone()),
        pool: PoolLimits::default(),
    };
    let chain = Arc::new(Chain::open(store, config)?);
    let store = ContentStore::open(datadir.content_dir(), max_upload_bytes)
        .context("cannot open the content store")?;
    let pending = PendingUploads::open(datadir.uploads_file())
        .context("cannot open the ledger of pending uploads")?;
    let adapters =
        AdapterStore::open(datadir.adapter_store_dir()).context("cannot open the adapter store")?;
    Ok((
        chain,
        Content {
            store,
            adapters,
            pending: Arc::new(pending),
        },
        indexes,
    ))
}

/// How the node's own services reach its content API: where it listens, and the token that
/// lets them read every file's rows (made at random at each start).
pub(crate) struct ContentAccess {
    pub url: String,
    pub token: String,
}

/// The content store, its ledger of uploads not yet contributed, and the published adapters.
pub(crate) struct Content {
    store: ContentStore,
    pub adapters: AdapterStore,
    pending: Arc<PendingUploads>,
}

/// The services of a running node: JSON-RPC, the content API and the block producer.
pub(crate) struct Services {
    /// Where JSON-RPC listens (HTTP and WebSocket).
    pub rpc_addr: SocketAddr,
    /// Where the content API listens.
    pub api_addr: SocketAddr,
    rpc: openledger_rpc::RpcServer,
    api: tokio::task::JoinHandle<std::io::Result<()>>,
    producer: tokio::task::JoinHandle<()>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Services {
    /// Starts the services on `(rpc, api)` addresses (port 0 picks a free one); `dev_keys` are
    /// the dev accounts' keys, which `eth_accounts` lists and `eth_sendTransaction` signs with;
    /// `more` gives routes to serve beside the content API, from a client of the node's methods
    /// in-process and the API's URL.
    pub async fn start(
        chain: Arc<Chain>,
        content: Content,
        dev_keys: Vec<PrivateKeySigner>,
        (rpc_addr, api_addr): (SocketAddr, SocketAddr),
        block_time: Duration,
        more: impl FnOnce(Client, ContentAccess) -> anyhow::Result<axum::Router>,
    ) -> anyhow::Result<Self> {
        let accounts = dev_keys.iter().map(PrivateKeySigner::address).collect();
        let rpc_config = RpcConfig {
            addr: rpc_addr,
            dev: Some(DevRpc { signers: dev_keys }),
            ..RpcConfig::default()
        };
        let rpc = openledger_rpc::start(chain.clone(), rpc_config)
            .await
            .with_context(|| format!("cannot serve JSON-RPC on {rpc_addr}"))?;
        let api_listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot serve the content API on {api_addr}"))?;
        let api_addr = api_listener.local_addr()?;
        let in_process = InProcess::new(rpc.methods.clone(), rpc.in_process.clone());
        let node_token = alloy_primitives::hex::encode(rand::random::<[u8; 32]>());
        let access = ContentAccess {
            url: format!("http://{api_addr}"),
            token: node_token.clone(),
        };
        let routes = more(Client::over(in_process.client(), None), access)?;
        let keeper = tokio::spawn(content_api::keeper::run(
            chain.clone(),
            content.store.clone(),
            content.pending.clone(),
        ));
        let app = http::with_json_errors(
            content_api::router(ContentApi {
                store: content.store,
                adapters: content.adapters,
                chain: chain.clone(),
                pending: content.pending,
                dev_accounts: accounts,
                node_token,
            })
            .merge(crate::metrics::router(
                chain.clone(),
                rpc.metrics.clone(),
                rpc.in_process.clone(),
            ))
            .merge(routes),
        );
        let api = tokio::spawn(http::serve(api_listener, app, HttpLimits::default()));
        let producer = tokio::spawn(miner::run(
            chain,
            openledger_chain::clock::Mining::from_block_time(block_time),
        ));
        Ok(Self {
            rpc_addr: rpc.local_addr,
            api_addr,
            rpc,
            api,
            producer,
            keeper,
        })
    }

    /// Stops them all.
    pub async fn stop(self) {
        self.keeper.abort();
        self.producer.abort();
        self.api.abort();
        self.rpc.stop().await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn print_banner(
    chain: &Chain,
    accounts: &[DevAccount],
    args: &DevArgs,
    datadir: &std::path::Path,
    (addr, api_addr): (SocketAddr, SocketAddr),
) {
    let genesis = chain.genesis();
    let head = chain.head();
    let mut out = String::new();
    out.push_str(&format!(
        "\nOpenLedger dev node v{}\n\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str(&format!("Chain id        {}\n", chain.chain_id()));
    out.push_str(&format!(
        "Head block      {} ({})\n",
        head.header.number, head.hash
    ));
    out.push_str(&format!(
        "Genesis supply  {} OPEN\n",
        format_open(genesis.total_supply())
    ));
    let block_time = if args.block_time == 0.0 {
        "on each transaction".to_string()
    } else {
        format!("{}s", args.block_time)
    };
    out.push_str(&format!("Block time      {block_time}\n"));
    out.push_str(&format!("Data directory  {}\n\n", datadir.display()));
    if args.genesis.is_none() {
        out.push_str("Available accounts\n==================\n");
        for (i, account) in accounts.iter().enumerate() {
            let balance = chain
                .balance_at(&account.address, head.header.number)
                .unwrap_or_default();
            out.push_str(&format!(
                "({i}) {} ({} OPEN)\n",
                account.address,
                format_open(balance)
            ));
        }
        out.push_str("\nPrivate keys\n==================\n");
        for (i, account) in accounts.iter().enumerate() {
            out.push_str(&format!("({i}) {}\n", account.key));
        }
        out.push_str(&format!(
            "\nMnemonic:        {DEV_MNEMONIC}\nDerivation path: {DERIVATION_PATH}<index>\n\n"
        ));
    }
    out.push_str(&format!(
        "JSON-RPC on http://{addr} and ws://{addr}\nContent API, span indexes and training jobs on http://{api_addr}\nOpenAI-compatible API (OpenLoRA) on http://{api_addr}/v1\n"
    ));
    println!("{out}");
}
