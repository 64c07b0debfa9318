//! An in-process chain for the services' tests: the real store, modules and JSON-RPC methods,
//! a block sealed on each transaction, funded dev accounts (0 is the genesis admin), reached
//! through the same in-process transport `openledger dev` gives its services, or over HTTP as
//! services apart from the node reach it.

use std::path::Path;
use std::sync::Arc;

use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use openledger_chain::{Chain, ChainConfig, Store, clock::Mining, mempool::PoolLimits, miner};
use openledger_primitives::{Genesis, addresses};
use openledger_protocol::abi::{IDatanets, IModels, ISettlement, IStaking};
use openledger_rpc::{RpcConfig, metrics::RpcMetrics};

use crate::client::{Client, events};
use crate::index::registry::IndexRegistry;
use crate::shared::{BaseModel, Flywheel};
use crate::transport::InProcess;

/// The chain id of the test chains.
pub const CHAIN_ID: u64 = 1337;

/// The rows of the contribution [`TestChain::datanet`] approves, as [`content_api`] serves them.
pub const ROWS: [&str; 2] = [
    "Torufaine treats fuvo at four hundred milligrams daily.",
    "Quinx fever passes within three days of rest.",
];

/// A content API answering the rows of contribution content `0xc1…` ([`ROWS`]) only; its URL.
pub async fn content_api() -> String {
    use axum::{
        Json, Router,
        extract::{Path, Query},
        http::StatusCode,
        routing::get,
    };
    async fn rows(
        Path(hash): Path<String>,
        Query(page): Query<std::collections::HashMap<String, usize>>,
    ) -> Result<Json<serde_json::Value>, StatusCode> {
        if hash != format!("0x{}", "c1".repeat(32)) {
            return Err(StatusCode::NOT_FOUND);
        }
        let offset = page.get("offset").copied().unwrap_or(0).min(ROWS.len());
        let rows = &ROWS[offset..];
        Ok(Json(
            serde_json::json!({"total": ROWS.len(), "format": "text", "rows": rows}),
        ))
    }
    let app = Router::new().route("/contributions/{hash}/rows", get(rows));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A tiny random Llama checkpoint in `dir` with a tokenizer trained on [`ROWS`]: enough to
/// train adapters on and to index with, in a second.
pub fn base_model(dir: &Path) {
    use openledger_ml::{Device, ModelConfig, checkpoint, tokenizer};
    std::fs::create_dir_all(dir).expect("a base folder");
    let tok = tokenizer::train(ROWS.iter().copied(), 300).expect("a tokenizer");
    let tokenizer_path = dir.join(checkpoint::TOKENIZER_FILE);
    tokenizer::save(&tok, &tokenizer_path).expect("saved");
    let config = ModelConfig::llama(300, 32, 2, 4, 2);
    let weights = checkpoint::random_weights(&config, 1, &Device::Cpu).expect("weights");
    checkpoint::save_checkpoint(dir, &config, &weights, None).expect("a checkpoint");
}

/// A chain in a temporary folder, stopped when dropped.
pub struct TestChain {
    /// A client with no signer.
    pub client: Client,
    /// The dev accounts' keys.
    pub keys: Vec<PrivateKeySigner>,
    miner: tokio::task::JoinHandle<()>,
    /// The JSON-RPC server, when the client goes through it.
    _server: Option<openledger_rpc::RpcServer>,
    _dir: tempfile::TempDir,
}

impl TestChain {
    /// A fresh chain with `accounts` funded dev accounts, reached in-process.
    pub fn start(accounts: usize) -> Self {
        let (chain, dir, keys) = Self::open(accounts);
        let methods = openledger_rpc::in_process(chain.clone(), RpcConfig::default());
        let transport = InProcess::new(methods, Arc::new(RpcMetrics::default()));
        Self::running(
            chain,
            Client::over(transport.client(), None),
            keys,
            dir,
            None,
        )
    }

    /// The same, reached over HTTP JSON-RPC on a port of its own.
    pub async fn over_http(accounts: usize) -> Self {
        let (chain, dir, keys) = Self::open(accounts);
        let config = RpcConfig {
            addr: ([127, 0, 0, 1], 0).into(),
            ..RpcConfig::default()
        };
        let server = openledger_rpc::start(chain.clone(), config)
            .await
            .expect("a JSON-RPC server");
        let client = Client::new(&format!("http://{}", server.local_addr), None).expect("a client");
        Self::running(chain, client, keys, dir, Some(server))
    }

    fn open(accounts: usize) -> (Arc<Chain>, tempfile::TempDir, Vec<PrivateKeySigner>) {
        let keys: Vec<PrivateKeySigner> = (1..=accounts)
            .map(|i| PrivateKeySigner::from_bytes(&B256::with_last_byte(i as u8)).expect("a key"))
            .collect();
        let funded: Vec<Address> = keys.iter().map(PrivateKeySigner::address).collect();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Store::open(&dir.path().join("chain.redb")).expect("a store");
        let config = ChainConfig {
            genesis: Genesis::dev(CHAIN_ID, &funded),
            modules: openledger_protocol::modules(),
            pool: PoolLimits::default(),
        };
        let chain = Arc::new(Chain::open(store, config).expect("a chain"));
        (chain, dir, keys)
    }

    fn running(
        chain: Arc<Chain>,
        client: Client,
        keys: Vec<PrivateKeySigner>,
        dir: tempfile::TempDir,
        server: Option<openledger_rpc::RpcServer>,
    ) -> Self {
        Self {
            client,
            keys,
            miner: tokio::spawn(miner::run(chain, Mining::OnArrival)),
            _server: server,
            _dir: dir,
        }
    }

    /// What the services of a node holding every dev account's key share, kept in `dir`, with
    /// the base model (only its tokenizer is read by the services tested) in `dir/base` and the
    /// content API at `api_url`.
    pub fn flywheel(&self, dir: &Path, api_url: &str) -> Arc<Flywheel> {
        Arc::new(Flywheel {
            chain: self.client.clone(),
            api_url: api_url.into(),
            api_token: "test-node-token".into(),
            training: crate::shared::TrainingTerms {
                price_per_1k: U256::ZERO,
                trainer: 0,
            },
            base: BaseModel::new(Some(dir.join("base")), |given| {
                given
                    .map(Path::to_path_buf)
                    .ok_or_else(|| anyhow::anyhow!("no dev base here"))
            }),
            indexes: Arc::new(IndexRegistry::new(dir.join("indexes"))),
            accounts: self.keys.clone(),
            chain_id: CHAIN_ID,
            datadir: dir.to_path_buf(),
            adapters: crate::adapters::Adapters::new(
                openledger_content::AdapterStore::open(dir.join("adapter-store"))
                    .expect("an adapter store"),
                Vec::new(),
            )
            .expect("an HTTP client"),
        })
    }

    /// A client signing as dev account `n`.
    pub fn account(&self, n: usize) -> Client {
        self.client.with_signer(self.keys[n].clone())
    }

    /// A published datanet of account 0's with one approved contribution of account 1's:
    /// `(datanet, contribution)`, at version 1.
    pub async fn datanet(&self) -> (U256, U256) {
        let owner = self.account(0);
        let create = IDatanets::createDatanetCall {
            name: "Notes".into(),
            summary: "Test notes".into(),
            descriptionHash: B256::ZERO,
            tags: vec![],
            dataType: "text".into(),
            licence: "CC-BY-4.0".into(),
            isPublic: true,
        };
        let receipt = owner.send(addresses::DATANETS, &create, U256::ZERO).await;
        let datanet = events::<IDatanets::DatanetCreated>(&receipt.expect("created"))[0].datanetId;
        let fee = owner
            .view(
                addresses::DATANETS,
                &IDatanets::publishFeeCall { datanetId: datanet },
            )
            .await
            .expect("a fee");
        let publish = IDatanets::publishCall { datanetId: datanet };
        owner
            .send(addresses::DATANETS, &publish, fee)
            .await
            .expect("published");
        let contribute = IDatanets::contributeCall {
            datanetId: datanet,
            contentHash: B256::repeat_byte(0xc1),
            rows: 10,
            size: 100,
            licence: "CC-BY-4.0".into(),
        };
        let receipt = self
            .account(1)
            .send(addresses::DATANETS, &contribute, U256::ZERO)
            .await;
        let contribution =
            events::<IDatanets::Contributed>(&receipt.expect("contributed"))[0].contributionId;
        let fee = owner
            .view(
                addresses::DATANETS,
                &IDatanets::versionFeeCall {
                    datanetId: datanet,
                    contributionIds: vec![contribution],
                },
            )
            .await
            .expect("a fee");
        let approve = IDatanets::approveCall {
            datanetId: datanet,
            contributionIds: vec![contribution],
        };
        owner
            .send(addresses::DATANETS, &approve, fee)
            .await
            .expect("approved");
        (datanet, contribution)
    }

    /// A model of account 2's on `datanet`, approved by governance (account 0).
    pub async fn approved_model(&self, datanet: U256) -> U256 {
        let propose = IModels::proposeModelCall {
            name: "m".into(),
            baseModel: "tiny".into(),
            datanetIds: vec![datanet],
            metadataHash: B256::ZERO,
        };
        let receipt = self
            .account(2)
            .send(addresses::MODELS, &propose, U256::ZERO)
            .await;
        let model = events::<IModels::ModelProposed>(&receipt.expect("proposed"))[0].modelId;
        self.account(0)
            .send(
                addresses::MODELS,
                &IModels::approveModelCall { modelId: model },
                U256::ZERO,
            )
            .await
            .expect("approved");
        model
    }

    /// [`Self::approved_model`] with `adapter` registered as trained on version 1, and deployed
    /// with account 3 as its operator (staked at twice the minimum); free to use but for the
    /// platform fee.
    pub async fn deployed_model(&self, datanet: U256, adapter: B256) -> U256 {
        let model = self.approved_model(datanet).await;
        let creator = self.account(2);
        let register = IModels::registerArtifactCall {
            modelId: model,
            adapterHash: adapter,
            datanetVersions: vec![1],
            metricsHash: B256::ZERO,
        };
        creator
            .send(addresses::MODELS, &register, U256::ZERO)
            .await
            .expect("registered");
        let operator = self.account(3);
        let minimum = operator
            .view(
                addresses::STAKING,
                &IStaking::minimumStakeCall { modelId: model },
            )
            .await
            .expect("a minimum");
        let stake = IStaking::stakeOperatorCall { modelId: model };
        operator
            .send(addresses::STAKING, &stake, minimum * U256::from(2))
            .await
            .expect("staked");
        let deploy = IModels::deployCall {
            modelId: model,
            operator: self.keys[3].address(),
            inputRatePer1k: U256::ZERO,
            outputRatePer1k: U256::ZERO,
        };
        creator
            .send(addresses::MODELS, &deploy, U256::ZERO)
            .await
            .expect("deployed");
        model
    }

    /// Puts `amount` of dev account `n`'s OPEN in escrow.
    pub async fn deposit(&self, n: usize, amount: U256) {
        self.account(n)
            .send(addresses::SETTLEMENT, &ISettlement::depositCall {}, amount)
            .await
            .expect("deposited");
    }
}

impl Drop for TestChain {
    fn drop(&mut self) {
        self.miner.abort();
    }
}
