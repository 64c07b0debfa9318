//! `openledger model ...`.

use alloy_primitives::{Address, B256, U256};
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::MODELS;
use openledger_protocol::abi::IModels;
use serde_json::json;

use super::{Common, block_on, events, open, parse_open, text_hash};

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
        ModelCommand::Registry(command) => command,
    };
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        let (receipt, json, text) = match command {
            RegistryCommand::Propose {
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
                let receipt = client.send(MODELS, &call, U256::ZERO).await?;
                let event = events::<IModels::ModelProposed>(&receipt)
                    .pop()
                    .context("no ModelProposed event")?;
                let id = event.modelId;
                let text = format!("Proposed model {id} {:?}, awaiting approval", event.name);
                (receipt, json!({"modelId": id.to_string()}), text)
            }
            RegistryCommand::Approve { model } => {
                let call = IModels::approveModelCall { modelId: model };
                let receipt = client.send(MODELS, &call, U256::ZERO).await?;
                (
                    receipt,
                    json!({"modelId": model.to_string()}),
                    format!("Approved model {model}"),
                )
            }
            RegistryCommand::Register {
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
                let receipt = client.send(MODELS, &call, U256::ZERO).await?;
                let version = events::<IModels::ArtifactRegistered>(&receipt)
                    .pop()
                    .context("no ArtifactRegistered event")?
                    .version;
                let current = client
                    .view(MODELS, &IModels::getModelCall { modelId: model })
                    .await?
                    .artifactVersion;
                let mut text = format!(
                    "Model {model} trained: adapter {adapter_hash}, artifact version {version}"
                );
                if current != version {
                    text += &format!(
                        "; it serves version {current} until deployed again (openledger model \
                         deploy {model} ...)"
                    );
                }
                let out = json!({"modelId": model.to_string(), "artifactVersion": version});
                (receipt, out, text)
            }
            RegistryCommand::Deploy {
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
                let receipt = client.send(MODELS, &call, U256::ZERO).await?;
                let version = events::<IModels::ModelDeployed>(&receipt)
                    .pop()
                    .context("no ModelDeployed event")?
                    .artifactVersion;
                let text = format!(
                    "Model {model} deployed by {operator} with artifact version {version}: {} / {} \
                     per 1k prompt / generated tokens",
                    open(input_rate),
                    open(output_rate)
                );
                let out = json!({"modelId": model.to_string(), "artifactVersion": version});
                (receipt, out, text)
            }
            RegistryCommand::Retire { model } => {
                let call = IModels::retireCall { modelId: model };
                let receipt = client.send(MODELS, &call, U256::ZERO).await?;
                let out = json!({"modelId": model.to_string()});
                (receipt, out, format!("Retired model {model}"))
            }
            RegistryCommand::List { from, limit } => {
                let count: U256 = client.view(MODELS, &IModels::modelCountCall {}).await?;
                let last = count
                    .saturating_to::<u64>()
                    .min(from.saturating_add(limit - 1));
                let mut models = Vec::new();
                for id in from.max(1)..=last {
                    let call = IModels::getModelCall {
                        modelId: U256::from(id),
                    };
                    models.push(client.view(MODELS, &call).await?);
                }
                let lines: Vec<String> = models
                    .iter()
                    .map(|m| {
                        format!(
                            "{:>5}  {:<9}  {}  ({})",
                            m.id,
                            format!("{:?}", m.status),
                            m.name,
                            datanet_versions(m).join(", ")
                        )
                    })
                    .collect();
                let text = if lines.is_empty() {
                    format!("No models from id {from} ({count} in all)")
                } else {
                    format!("   id  status     name  (datanets)\n{}", lines.join("\n"))
                };
                common.print(
                    json!(models.iter().map(model_json).collect::<Vec<_>>()),
                    text,
                );
                return Ok(());
            }
            RegistryCommand::Publish { model, adapter } => {
                let openledger_flywheel::jobs::Published {
                    adapter_hash: hash,
                    left_out,
                } = openledger_flywheel::jobs::publish_adapter(
                    &client,
                    &common.api_url,
                    model,
                    &adapter,
                )
                .await?;
                let without = match left_out.as_slice() {
                    [] => String::new(),
                    names => format!(" without {} (over the size limit)", names.join(", ")),
                };
                common.print(
                    json!({"modelId": model.to_string(), "adapterHash": hash, "leftOut": left_out}),
                    format!("Published model {model}'s adapter {hash}{without}"),
                );
                return Ok(());
            }
            RegistryCommand::Show { model } => {
                let m = client
                    .view(MODELS, &IModels::getModelCall { modelId: model })
                    .await?;
                let versions = datanet_versions(&m);
                common.print(
                    model_json(&m),
                    format!(
                        "Model {}: {}\n  status     {:?}\n  creator    {}\n  base       {}\n  \
                         datanets   {}\n  adapter    {} (artifact version {} of {})\n  operator   {}\n  \
                         prices     {} / {} per 1k tokens",
                        m.id,
                        m.name,
                        m.status,
                        m.creator,
                        m.baseModel,
                        versions.join(", "),
                        m.adapterHash,
                        m.artifactVersion,
                        m.artifactCount,
                        m.operator,
                        open(m.inputRatePer1k),
                        open(m.outputRatePer1k)
                    ),
                );
                return Ok(());
            }
        };
        let mut json = json;
        json["tx"] = json!(receipt.transaction_hash);
        common.print(json, text);
        Ok(())
    })
}

/// A model's datanets with the versions its artifact registers, `ID@vN` (just `ID` before).
fn datanet_versions(m: &IModels::Model) -> Vec<String> {
    m.datanetIds
        .iter()
        .zip(
            m.datanetVersions
                .iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        )
        .map(|(id, v)| match v {
            Some(v) => format!("{id}@v{v}"),
            None => id.to_string(),
        })
        .collect()
}

/// A model as `--json` prints it.
fn model_json(m: &IModels::Model) -> serde_json::Value {
    json!({"id": m.id.to_string(), "name": m.name, "creator": m.creator,
        "status": format!("{:?}", m.status), "baseModel": m.baseModel,
        "datanetIds": m.datanetIds.iter().map(U256::to_string).collect::<Vec<_>>(),
        "datanetVersions": m.datanetVersions, "adapterHash": m.adapterHash,
        "artifactVersion": m.artifactVersion, "artifactCount": m.artifactCount,
        "operator": m.operator, "inputRatePer1k": m.inputRatePer1k.to_string(),
        "outputRatePer1k": m.outputRatePer1k.to_string()})
}
