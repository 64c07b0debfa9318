//! `openledger demo`: the flywheel end to end on a fresh dev chain. Contributors upload data to
//! a datanet, its owner approves a version, governance approves a model, the ModelFactory trains
//! it, an operator deploys it with stake, a user pays for inferences that are attributed to the
//! data and settled on-chain, validators rate some, and everyone claims what they earned.
//!
//! Every step is a transaction signed by the actor it belongs to and sent through the node's own
//! JSON-RPC, and every file goes through its content API, as any client's would. Training,
//! indexing, serving and settlement are the node's own services, which `openledger dev` runs:
//! the creator submits a training job, the indexer builds the version's span index, and the user
//! signs an order for each completion it asks OpenLoRA for, which the node's ledger attributes
//! and settles. Only the operator's fraud is done by hand.

mod actors;
mod api;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, Bytes, U256, keccak256, utils::parse_ether};
use alloy_rpc_types_eth::TransactionReceipt;
use alloy_signer::SignerSync;
use alloy_sol_types::SolCall;
use anyhow::{Context, bail};
use clap::Args;
use openledger_flywheel::adapters::Adapters;
use openledger_flywheel::jobs::DatanetVersion;
use openledger_flywheel::shared::BaseModel;
use openledger_flywheel::shared::TrainingTerms;
use openledger_ml::{
    data::Row,
    synth::{Manifest, SynthOptions},
};
use openledger_primitives::{
    DEV_CHAIN_ID, Genesis,
    addresses::{DATANETS, FEEDBACK, GOPEN, GOVERNOR, MODELS, SETTLEMENT, STAKING},
};
use openledger_protocol::abi::{
    IDatanets, IFeedback, IGOPEN, IGovernor, IModels, ISettlement, IStaking,
};
use serde_json::json;

use crate::cli::{event, events};
use crate::datadir::DataDir;
use crate::dev::{Services, flywheel, open_chain};
use actors::{Actor, Cast};
use api::{Api, Trained};
use report::{Inference, Receipts, Report};

/// Options of `openledger demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Data directory, empty or missing [default: a temporary directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    datadir: Option<PathBuf>,
    /// Base model: a checkpoint directory (Hugging Face format), a GGUF file, or a model `model get` installed (smollm2) [default: the dev base model, built on first use]
    #[arg(long)]
    base: Option<PathBuf>,
    /// Data contributors.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=8))]
    contributors: u32,
    /// Rows each contributor uploads [default: 60; 8 with --base, a model 100 times the dev
    /// base model's size or more, which trains a hundred times slower]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rows: Option<u32>,
    /// Inferences the user pays for.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=200))]
    inferences: u32,
    /// Epochs of the fine-tuning [default: 12; 4 with --base]
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed of the generated domain and of the training.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

impl DemoArgs {
    /// Rows each contributor uploads: fewer on a base model of the user's, which trains far
    /// slower than the dev one.
    fn rows(&self) -> u32 {
        self.rows
            .unwrap_or(if self.base.is_some() { 8 } else { 60 })
    }

    /// Epochs of the fine-tuning, as [`Self::rows`].
    fn epochs(&self) -> usize {
        self.epochs
            .unwrap_or(if self.base.is_some() { 4 } else { 12 })
    }
}

/// OPEN the operator charges per 1,000 prompt and generated tokens.
const INPUT_RATE: &str = "0.1";
const OUTPUT_RATE: &str = "0.4";
/// OPEN the owner wraps into GOPEN to carry the governance vote alone.
const GOPEN_STAKE: &str = "1000";
/// OPEN a model pays per row of the datanet to train on it, and per 1,000 training tokens of
/// compute; the creator's escrow that pays for the compute.
const ACCESS_PRICE: &str = "0.0001";
const TRAINING_PRICE: &str = "0.001";
const CREATOR_ESCROW: &str = "5";
/// OPEN the staker delegates to the model, and the user prepays into escrow.
const DELEGATED_STAKE: &str = "25";
const ESCROW: &str = "20";
/// Receipts the validators rate.
const RATED: usize = 2;
/// Tokens each answer may generate.
const ANSWER_TOKENS: u64 = 24;

/// Runs `openledger demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let datadir_path = match &args.datadir {
        Some(dir) => {
            if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
                bail!(
                    "{} is not empty: the demo starts a new chain, give it an empty directory",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => scratch.path().join("datadir"),
    };
    let base = crate::factory::base_or_dev(args.base.as_deref())?;
    let contributors = args.contributors as usize;
    let keys = Cast::keys(contributors)?;
    let accounts: Vec<_> = keys.iter().map(|k| k.address()).collect();
    let genesis = Genesis::dev(DEV_CHAIN_ID, &accounts);
    let datadir = DataDir::open(&datadir_path)?;
    let (chain, content, indexes) = open_chain(&datadir, genesis, 16 << 20)?;
    let adapters = Adapters::new(content.adapters.clone(), Vec::new())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let loopback = "127.0.0.1:0".parse().expect("an address");
        let services = Services::start(
            chain.clone(),
            content,
            keys.clone(),
            (loopback, loopback),
            Duration::ZERO,
            flywheel(
                BaseModel::new(Some(base.clone()), crate::factory::base_or_dev),
                indexes,
                keys,
                chain.chain_id(),
                datadir.path().to_path_buf(),
                (
                    adapters,
                    TrainingTerms {
                        price_per_1k: open(TRAINING_PRICE),
                        trainer: Cast::OPERATOR_ACCOUNT,
                    },
                ),
            ),
        )
        .await?;
        let demo = Demo {
            args: &args,
            base: &base,
            cast: Cast::connect(contributors, &format!("http://{}", services.rpc_addr))?,
            api: Api::new(&format!("http://{}", services.api_addr))?,
            step: 0,
            started: Instant::now(),
        };
        // Ctrl-C stops the demo cleanly: its temporary data directory is removed.
        let result = tokio::select! {
            result = demo.run() => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        services.stop().await;
        result
    })?;
    // The training job's thread stops between steps; nothing else outlives the services.
    runtime.shutdown_timeout(Duration::from_secs(3));
    drop(datadir);
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}

/// The demo's state as it goes.
struct Demo<'a> {
    args: &'a DemoArgs,
    base: &'a Path,
    cast: Cast,
    /// The node's HTTP API: content, jobs, indexes, completions and settlements.
    api: Api,
    step: usize,
    started: Instant,
}

/// Steps the demo prints progress for.
const STEPS: usize = 12;

impl Demo<'_> {
    /// Prints the next step's title.
    fn step(&mut self, title: &str) {
        self.step += 1;
        eprintln!(
            "[{:>2}/{STEPS}] {:>5.1}s  {title}",
            self.step,
            self.started.elapsed().as_secs_f64()
        );
    }

    async fn run(mut self) -> anyhow::Result<Report> {
        self.step("generating a domain: one corpus per contributor");
        let (manifest, corpora) = openledger_ml::synth::corpus(&SynthOptions {
            domain: "medical".into(),
            contributors: self.cast.contributors.len(),
            rows: self.args.rows() as usize,
            seed: self.args.seed,
            noise_contributor: None,
        })?;
        self.step("creating and publishing a datanet; contributors upload their files");
        let datanet = self.create_datanet(&manifest).await?;
        let contributions = self.contribute(datanet, &corpora).await?;
        self.step("the owner approves the contributions (version 1) and prices training on them");
        let version = self.approve(datanet, &contributions).await?;
        self.price(datanet).await?;
        self.step("a model is proposed and approved by governance; its creator buys it access");
        let model = self.propose_model(datanet).await?;
        self.govern_approval(model).await?;
        let access = self.buy_access(model, datanet, version).await?;
        self.step("ModelFactory: a training job fine-tunes a LoRA adapter and registers it");
        let at = DatanetVersion { datanet, version };
        let trained = self.train(model, at).await?;
        self.step("the operator stakes and deploys the model; a staker backs it");
        self.deploy(model).await?;
        self.step("the indexer builds the datanet version's span index");
        self.api.index_ready(at).await?;
        self.step("a user pays OpenLoRA for answers; the node attributes and settles each");
        let inferences = self.infer(model, &manifest).await?;
        let mut settled = self.settlements(&inferences).await?;
        let tampered = tamper(&inferences, &contributions);
        let mut tampered_receipt = None;
        if let Some((k, victim)) = tampered {
            let receipt = self.settle_tampered(model, &inferences[k], victim).await?;
            settled.push(receipt.clone());
            tampered_receipt = Some((receipt, k));
        }
        self.step("validators rate settled inferences (commit, reveal, finalize)");
        let receipts: Vec<B256> = inferences.iter().map(|i| i.receipt_id).collect();
        let ratings = self.rate(&receipts[..RATED.min(receipts.len())]).await?;
        self.step("a challenger recomputes a tampered receipt's attribution");
        let challenge = match &tampered_receipt {
            Some((receipt, k)) => Some(self.challenge(receipt, &inferences[*k]).await?),
            None => None,
        };
        self.step("everyone claims what they earned");
        let claims = self.claim(model).await?;
        self.step("checking that every fee is accounted for");
        let compute = self.cast.operator.client.wait(trained.compute_tx).await?;
        let receipts = Receipts {
            access,
            compute,
            settled,
            ratings,
            tampered,
            challenge,
            claims,
        };
        Report::new(&self.cast, &contributions, &trained, &inferences, &receipts)
    }

    async fn create_datanet(&self, manifest: &Manifest) -> anyhow::Result<U256> {
        let owner = &self.cast.owner.client;
        let call = IDatanets::createDatanetCall {
            name: format!("{} notes", manifest.domain),
            summary: format!(
                "Generated {} corpus, one style per contributor",
                manifest.domain
            ),
            descriptionHash: B256::ZERO,
            tags: vec![manifest.domain.clone(), "demo".into()],
            dataType: "text".into(),
            licence: "CC-BY-4.0".into(),
            isPublic: true,
        };
        let receipt = owner.send(DATANETS, &call, U256::ZERO).await?;
        let id = event::<IDatanets::DatanetCreated>(&receipt)?.datanetId;
        let fee = owner
            .view(DATANETS, &IDatanets::publishFeeCall { datanetId: id })
            .await?;
        owner
            .send(DATANETS, &IDatanets::publishCall { datanetId: id }, fee)
            .await?;
        Ok(id)
    }

    /// Each contributor uploads its rows as a text file and submits the contribution.
    async fn contribute(&self, datanet: U256, corpora: &[Vec<Row>]) -> anyhow::Result<Vec<U256>> {
        let mut ids = Vec::new();
        for (actor, rows) in self.cast.contributors.iter().zip(corpora) {
            let text: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
            let uploaded = crate::cli::datanet::upload_bytes(
                self.api.url(),
                datanet,
                format!("{}.txt", actor.name.replace(' ', "-")),
                text.join("\n\n").into_bytes(),
                &actor.client,
            )
            .await?;
            let count = |name: &str| uploaded[name].as_u64().context("a count in the upload");
            let call = IDatanets::contributeCall {
                datanetId: datanet,
                contentHash: serde_json::from_value(uploaded["contentHash"].clone())?,
                rows: count("rows")?,
                size: count("size")?,
                licence: "CC-BY-4.0".into(),
            };
            let receipt = actor.client.send(DATANETS, &call, U256::ZERO).await?;
            let event = event::<IDatanets::Contributed>(&receipt)?;
            ids.push(event.contributionId);
        }
        Ok(ids)
    }

    async fn approve(&self, datanet: U256, ids: &[U256]) -> anyhow::Result<u64> {
        let owner = &self.cast.owner.client;
        let fee = owner
            .view(
                DATANETS,
                &IDatanets::versionFeeCall {
                    datanetId: datanet,
                    contributionIds: ids.to_vec(),
                },
            )
            .await?;
        let call = IDatanets::approveCall {
            datanetId: datanet,
            contributionIds: ids.to_vec(),
        };
        let receipt = owner.send(DATANETS, &call, fee).await?;
        Ok(event::<IDatanets::VersionCreated>(&receipt)?.version)
    }

    async fn propose_model(&self, datanet: U256) -> anyhow::Result<U256> {
        let call = IModels::proposeModelCall {
            name: "medical-notes-lora".into(),
            baseModel: self
                .base
                .file_name()
                .map_or_else(|| "base".into(), |n| n.to_string_lossy().into_owned()),
            datanetIds: vec![datanet],
            metadataHash: B256::ZERO,
        };
        let receipt = self
            .cast
            .creator
            .client
            .send(MODELS, &call, U256::ZERO)
            .await?;
        Ok(event::<IModels::ModelProposed>(&receipt)?.modelId)
    }

    /// The owner wraps OPEN into GOPEN, proposes the model's approval, votes it through, queues
    /// and executes it, moving the dev chain's clock over the delays.
    async fn govern_approval(&self, model: U256) -> anyhow::Result<()> {
        let voter = &self.cast.owner.client;
        voter
            .send(GOPEN, &IGOPEN::depositCall {}, open(GOPEN_STAKE))
            .await?;
        let delegate = IGOPEN::delegateCall {
            delegatee: self.cast.owner.address,
        };
        voter.send(GOPEN, &delegate, U256::ZERO).await?;
        voter.advance_time(1).await?;
        let description = format!("Approve model {model} for training");
        let targets = vec![MODELS];
        let values = vec![U256::ZERO];
        let calldatas: Vec<Bytes> = vec![
            IModels::approveModelCall { modelId: model }
                .abi_encode()
                .into(),
        ];
        let propose = IGovernor::proposeCall {
            targets: targets.clone(),
            values: values.clone(),
            calldatas: calldatas.clone(),
            description: description.clone(),
        };
        let receipt = voter.send(GOVERNOR, &propose, U256::ZERO).await?;
        let proposal = event::<IGovernor::ProposalCreated>(&receipt)?.proposalId;
        let delay = voter.view(GOVERNOR, &IGovernor::votingDelayCall {}).await?;
        voter.advance_time(delay.to::<u64>() + 1).await?;
        let vote = IGovernor::castVoteCall {
            proposalId: proposal,
            support: 1,
        };
        voter.send(GOVERNOR, &vote, U256::ZERO).await?;
        let period = voter
            .view(GOVERNOR, &IGovernor::votingPeriodCall {})
            .await?;
        voter.advance_time(period.to::<u64>() + 1).await?;
        let description_hash = keccak256(description.as_bytes());
        let queue = IGovernor::queueCall {
            targets: targets.clone(),
            values: values.clone(),
            calldatas: calldatas.clone(),
            descriptionHash: description_hash,
        };
        voter.send(GOVERNOR, &queue, U256::ZERO).await?;
        let timelock = voter
            .view(GOVERNOR, &IGovernor::timelockDelayCall {})
            .await?;
        voter.advance_time(timelock.to::<u64>() + 1).await?;
        let execute = IGovernor::executeCall {
            targets,
            values,
            calldatas,
            descriptionHash: description_hash,
        };
        voter.send(GOVERNOR, &execute, U256::ZERO).await?;
        Ok(())
    }

    /// The owner prices training on the datanet per row; models are granted access at once.
    async fn price(&self, datanet: U256) -> anyhow::Result<()> {
        let call = IDatanets::setAccessTermsCall {
            datanetId: datanet,
            pricePerRow: open(ACCESS_PRICE),
            approvalRequired: false,
        };
        self.cast
            .owner
            .client
            .send(DATANETS, &call, U256::ZERO)
            .await?;
        Ok(())
    }

    /// The creator buys its model access to the version, paying the quoted fee.
    async fn buy_access(
        &self,
        model: U256,
        datanet: U256,
        version: u64,
    ) -> anyhow::Result<TransactionReceipt> {
        let creator = &self.cast.creator.client;
        let quote = IDatanets::accessFeeCall {
            modelId: model,
            datanetId: datanet,
            version,
        };
        let fee = creator.view(DATANETS, &quote).await?;
        let call = IDatanets::requestAccessCall {
            modelId: model,
            datanetId: datanet,
            version,
        };
        creator.send(DATANETS, &call, fee).await
    }

    /// The creator's training job on the datanet version, through the node's job API, paid
    /// from its escrow: the trainer reads the version's rows back from the content API,
    /// fine-tunes the adapter, records its gradient sketches, registers it and publishes it,
    /// and is paid for the compute.
    async fn train(&self, model: U256, at: DatanetVersion) -> anyhow::Result<Trained> {
        self.cast
            .creator
            .client
            .send(
                SETTLEMENT,
                &ISettlement::depositCall {},
                open(CREATOR_ESCROW),
            )
            .await?;
        let request = json!({
            "model": model.to::<u64>(),
            "datanets": [at.to_string()],
            "rank": 8,
            "alpha": 16.0,
            "targets": "q,k,v,o,gate,up,down",
            "lr": 5e-3,
            "epochs": self.args.epochs(),
            "seed": self.args.seed,
            "context": 128,
        });
        let key = self.cast.api_key(&self.cast.creator);
        let trained = self.api.train(&key, &request).await?;
        eprintln!("         {} rows", trained.rows);
        Ok(trained)
    }

    /// Deploys `model` at the demo's prices; a staker backs it.
    async fn deploy(&self, model: U256) -> anyhow::Result<()> {
        let operator = &self.cast.operator;
        let minimum = operator
            .client
            .view(STAKING, &IStaking::minimumStakeCall { modelId: model })
            .await?;
        // The minimum grows with the model's fee volume: twice today's leaves room to serve.
        let stake = IStaking::stakeOperatorCall { modelId: model };
        operator
            .client
            .send(STAKING, &stake, minimum * U256::from(2))
            .await?;
        let deploy = IModels::deployCall {
            modelId: model,
            operator: operator.address,
            inputRatePer1k: open(INPUT_RATE),
            outputRatePer1k: open(OUTPUT_RATE),
        };
        self.cast
            .creator
            .client
            .send(MODELS, &deploy, U256::ZERO)
            .await?;
        let back = IStaking::stakeCall { modelId: model };
        self.cast
            .staker
            .client
            .send(STAKING, &back, open(DELEGATED_STAKE))
            .await?;
        Ok(())
    }

    /// The user prepays escrow, then asks OpenLoRA to complete each prompt (the start of a
    /// contributor's fact) greedily, paying with an order it signs for at most the prompt's and
    /// the answer's worst-case fee; the node attributes each answer and settles it.
    async fn infer(&self, model: U256, manifest: &Manifest) -> anyhow::Result<Vec<Inference>> {
        let user = &self.cast.user;
        user.client
            .send(SETTLEMENT, &ISettlement::depositCall {}, open(ESCROW))
            .await?;
        let mut out = Vec::new();
        for (nonce, prompt) in prompts(manifest, self.args.inferences as usize)
            .into_iter()
            .enumerate()
        {
            // A token is at least a byte, and the prompt gains a start token.
            let worst = (prompt.len() as u64 + 1, ANSWER_TOKENS);
            let (order, signature) = self.order(model, nonce, worst).await?;
            let request = json!({
                "model": format!("model-{model}"),
                "prompt": prompt,
                "max_tokens": ANSWER_TOKENS,
                "temperature": 0,
                "stop": ["\n"],
                "seed": self.args.seed,
                "openledger": {
                    "order": {
                        "user": order.user,
                        "modelId": order.modelId.to_string(),
                        "maxFee": order.maxFee.to_string(),
                        "nonce": order.nonce.to_string(),
                        "expiry": order.expiry,
                    },
                    "signature": signature,
                },
            });
            let answer = self.api.complete(&request).await?;
            out.push(Inference::answered(prompt, &answer)?);
        }
        Ok(out)
    }

    /// An order of the user's for model `model`, with nonce `nonce`, paying at most the quote
    /// of `(input, output)` tokens, signed as any wallet would: the digest read from the chain.
    async fn order(
        &self,
        model: U256,
        nonce: usize,
        (input, output): (u64, u64),
    ) -> anyhow::Result<(ISettlement::InferenceOrder, Bytes)> {
        let user = &self.cast.user;
        let quote = ISettlement::quoteCall {
            modelId: model,
            inputTokens: input,
            outputTokens: output,
        };
        let order = ISettlement::InferenceOrder {
            user: user.address,
            modelId: model,
            maxFee: user.client.view(SETTLEMENT, &quote).await?,
            nonce: U256::from(nonce),
            expiry: self.now().await? + 3_600,
        };
        let digest = ISettlement::orderDigestCall {
            order: order.clone(),
        };
        let digest = user.client.view(SETTLEMENT, &digest).await?;
        let signature = user.signer.sign_hash_sync(&digest)?;
        Ok((order, Bytes::from(signature.as_bytes().to_vec())))
    }

    /// The transactions that settled the answers, once each settlement is on-chain (the node's
    /// batcher may have settled several in one).
    async fn settlements(
        &self,
        inferences: &[Inference],
    ) -> anyhow::Result<Vec<TransactionReceipt>> {
        let mut txs: Vec<B256> = Vec::new();
        for inference in inferences {
            self.api.settled(inference.receipt_id).await?;
            if !txs.contains(&inference.settlement_tx) {
                txs.push(inference.settlement_tx);
            }
        }
        let client = &self.cast.operator.client;
        let mut receipts = Vec::new();
        for tx in txs {
            let receipt = client.wait(tx).await?;
            if !receipt.status() {
                bail!("settlement transaction {tx} reverted");
            }
            receipts.push(receipt);
        }
        Ok(receipts)
    }

    /// The operator's fraud, by hand: answer `inference` settled again under a new order of the
    /// user's, with all its weight on contribution `victim`.
    async fn settle_tampered(
        &self,
        model: U256,
        inference: &Inference,
        victim: U256,
    ) -> anyhow::Result<TransactionReceipt> {
        let tokens = (inference.input_tokens, inference.output_tokens);
        let nonce = self.args.inferences as usize;
        let (order, signature) = self.order(model, nonce, tokens).await?;
        let mut receipt = inference.receipt()?;
        receipt.contributionIds = vec![victim];
        receipt.weights = vec![1_000_000];
        let settlement = ISettlement::Settlement {
            order,
            signature,
            receipt,
        };
        let call = ISettlement::settleBatchCall {
            settlements: vec![settlement],
        };
        self.cast
            .operator
            .client
            .send(SETTLEMENT, &call, U256::ZERO)
            .await
    }

    /// The challenger sends the tampered receipt's record (from its ReceiptRecorded event),
    /// prompt and answer with the bond; the node recomputes the attribution.
    async fn challenge(
        &self,
        settled: &TransactionReceipt,
        inference: &Inference,
    ) -> anyhow::Result<TransactionReceipt> {
        let recorded = events::<ISettlement::ReceiptRecorded>(settled);
        let recorded = recorded
            .first()
            .context("no record of the tampered receipt")?;
        let client = &self.cast.challenger.client;
        let bond = client
            .view(SETTLEMENT, &ISettlement::challengeBondCall {})
            .await?;
        let call = ISettlement::challengeCall {
            receiptId: recorded.receiptId,
            record: recorded.record.clone(),
            prompt: inference.prompt.clone(),
            output: inference.output.clone(),
        };
        client.send(SETTLEMENT, &call, bond).await
    }

    async fn now(&self) -> anyhow::Result<u64> {
        self.cast.owner.client.latest_timestamp().await
    }

    /// Both validators stake, commit a rating of each receipt, reveal it and finalize; returns
    /// the finalize receipts.
    async fn rate(&self, receipts: &[B256]) -> anyhow::Result<Vec<TransactionReceipt>> {
        let first = &self.cast.validators[0].client;
        let params = first.view(FEEDBACK, &IFeedback::paramsCall {}).await?;
        for v in &self.cast.validators {
            v.client
                .send(
                    FEEDBACK,
                    &IFeedback::registerValidatorCall {},
                    params.validatorMinStake,
                )
                .await?;
        }
        let ratings = |v: &Actor, receipt: B256| -> anyhow::Result<(B256, B256)> {
            let salt = v
                .client
                .signer_secret(&[b"openledger demo salt", &receipt[..]].concat())?;
            let commitment = openledger_protocol::feedback::commitment(
                receipt,
                v.address,
                SCORE,
                false,
                B256::ZERO,
                salt,
            );
            Ok((salt, commitment))
        };
        for &receipt in receipts {
            for v in &self.cast.validators {
                let (_, commitment) = ratings(v, receipt)?;
                let call = IFeedback::rateCall {
                    receiptId: receipt,
                    commitment,
                };
                v.client.send(FEEDBACK, &call, U256::ZERO).await?;
            }
        }
        first.advance_time(params.commitWindow + 1).await?;
        for &receipt in receipts {
            for v in &self.cast.validators {
                let (salt, _) = ratings(v, receipt)?;
                let call = IFeedback::revealCall {
                    receiptId: receipt,
                    score: SCORE,
                    harmful: false,
                    labelsHash: B256::ZERO,
                    salt,
                };
                v.client.send(FEEDBACK, &call, U256::ZERO).await?;
            }
        }
        first.advance_time(params.revealWindow + 1).await?;
        let mut finalized = Vec::new();
        for &receipt in receipts {
            let call = IFeedback::finalizeCall { receiptId: receipt };
            finalized.push(first.send(FEEDBACK, &call, U256::ZERO).await?);
        }
        Ok(finalized)
    }

    /// Every actor with something to claim claims it, from the Settlement, Staking and
    /// Feedback modules; returns the claim receipts.
    async fn claim(&self, model: U256) -> anyhow::Result<Vec<TransactionReceipt>> {
        let mut receipts = Vec::new();
        for actor in self.cast.all() {
            let c = &actor.client;
            let a = actor.address;
            if !c
                .view(SETTLEMENT, &ISettlement::rewardsCall { account: a })
                .await?
                .is_zero()
            {
                receipts.push(
                    c.send(SETTLEMENT, &ISettlement::claimCall {}, U256::ZERO)
                        .await?,
                );
            }
            let pending = IStaking::pendingRewardsCall {
                modelId: model,
                account: a,
            };
            if !c.view(STAKING, &pending).await?.is_zero() {
                let call = IStaking::claimCall { modelId: model };
                receipts.push(c.send(STAKING, &call, U256::ZERO).await?);
            }
            let validator = c
                .view(FEEDBACK, &IFeedback::validatorOfCall { validator: a })
                .await?;
            if !validator.rewards.is_zero() {
                receipts.push(
                    c.send(FEEDBACK, &IFeedback::claimCall {}, U256::ZERO)
                        .await?,
                );
            }
        }
        Ok(receipts)
    }
}

/// The operator's fraud the demo catches: the first answer attributed by its spans settled
/// again with all its weight on a contribution the attribution did not credit most. Returns the
/// answer's index and that contribution.
fn tamper(inferences: &[Inference], contributions: &[U256]) -> Option<(usize, U256)> {
    inferences.iter().enumerate().find_map(|(k, inference)| {
        let top = inference.span_weights()?.first()?;
        let victim = contributions
            .iter()
            .find(|c| c.to_string() != top.contribution)?;
        Some((k, *victim))
    })
}

/// The score both validators give.
const SCORE: u8 = 4;

/// Prompts made of the first half of contributors' facts, taking each contributor in turn.
fn prompts(manifest: &Manifest, count: usize) -> Vec<String> {
    let contributors = &manifest.contributors;
    (0..count)
        .map(|i| {
            let c = &contributors[i % contributors.len()];
            let fact = &c.facts[(i / contributors.len()) % c.facts.len()];
            let words: Vec<&str> = fact.text.split_whitespace().collect();
            words[..words.len().div_ceil(2)].join(" ")
        })
        .collect()
}

/// An amount of OPEN written as a decimal constant.
fn open(amount: &str) -> U256 {
    parse_ether(amount).expect("a valid OPEN constant")
}
