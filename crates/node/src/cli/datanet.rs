//! `openledger datanet ...`.

use std::path::PathBuf;

use alloy_primitives::U256;
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::DATANETS;
use openledger_protocol::abi::IDatanets;
use serde_json::{Value, json};

use super::{Client, Common, block_on, events, open, parse_open, text_hash};
use openledger_flywheel::signing::{SIGNATURE_HEADER, upload_message};

/// Options of `openledger datanet`.
#[derive(Debug, Args)]
pub struct DatanetArgs {
    #[command(subcommand)]
    command: DatanetCommand,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Subcommand)]
enum DatanetCommand {
    /// Create a datanet and publish it (paying the publication fee) unless --draft.
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// A one-line summary.
        #[arg(long, default_value = "")]
        summary: String,
        /// A longer description; its keccak256 hash goes on-chain.
        #[arg(long)]
        description: Option<String>,
        /// A tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The kind of data.
        #[arg(long, default_value = "text")]
        data_type: String,
        /// The licence contributions are under.
        #[arg(long, default_value = "")]
        licence: String,
        /// Accept contributions only from allow-listed accounts.
        #[arg(long)]
        private: bool,
        /// Leave it in draft.
        #[arg(long)]
        draft: bool,
    },
    /// Upload a file (.txt, .md, .jsonl, .csv) to the node's content store.
    Upload {
        /// The datanet.
        datanet: U256,
        /// The file.
        file: PathBuf,
    },
    /// Upload a file and submit it to the datanet as a contribution.
    Contribute {
        /// The datanet.
        datanet: U256,
        /// The file.
        file: PathBuf,
        /// The licence of the file.
        #[arg(long, default_value = "")]
        licence: String,
    },
    /// Approve pending contributions, in order, as a new version (pays the version fee). Each
    /// contribution's declared rows and size are checked first against the file the node holds
    /// (access fees pay per declared row); one that differs is refused.
    Approve {
        /// The datanet.
        datanet: U256,
        /// Contribution ids.
        #[arg(required = true)]
        contributions: Vec<U256>,
        /// Approve without checking the files against what their contributions declare.
        #[arg(long)]
        unchecked: bool,
    },
    /// Reject pending contributions.
    Reject {
        /// The datanet.
        datanet: U256,
        /// Contribution ids.
        #[arg(required = true)]
        contributions: Vec<U256>,
        /// A reason code for the contributors.
        #[arg(long, default_value_t = 0)]
        reason: u32,
    },
    /// Set what a model pays per row to train on the datanet (the owner), and whether the owner
    /// approves each request (a private datanet's; a public one grants at once).
    Price {
        /// The datanet.
        datanet: U256,
        /// OPEN per row of the versions paid for.
        #[arg(value_parser = parse_open)]
        price_per_row: U256,
        /// Approve each request before it is granted (private datanets).
        #[arg(long)]
        approval: bool,
    },
    /// Models' paid access to datanets for training: request, approve, refuse, show.
    Access {
        #[command(subcommand)]
        command: super::access::AccessCommand,
    },
    /// List every datanet.
    List,
    /// Show a datanet with its contributions and versions.
    Show {
        /// The datanet.
        datanet: U256,
    },
}

/// Runs `openledger datanet`.
pub fn run(args: DatanetArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        match args.command {
            DatanetCommand::Create {
                name,
                summary,
                description,
                tags,
                data_type,
                licence,
                private,
                draft,
            } => {
                let call = IDatanets::createDatanetCall {
                    name,
                    summary,
                    descriptionHash: text_hash(description.as_deref()),
                    tags,
                    dataType: data_type,
                    licence,
                    isPublic: !private,
                };
                let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
                let created = events::<IDatanets::DatanetCreated>(&receipt)
                    .pop()
                    .context("no DatanetCreated event")?;
                let id = created.datanetId;
                let fee = if draft {
                    None
                } else {
                    let fee = client
                        .view(DATANETS, &IDatanets::publishFeeCall { datanetId: id })
                        .await?;
                    let publish = IDatanets::publishCall { datanetId: id };
                    client.send(DATANETS, &publish, fee).await?;
                    Some(fee)
                };
                let state = fee.map_or("draft".to_string(), |f| {
                    format!("published, fee {}", open(f))
                });
                common.print(
                    json!({"datanetId": id.to_string(), "published": fee.is_some(),
                           "fee": fee.map(|f| f.to_string()), "tx": receipt.transaction_hash}),
                    format!("Created datanet {id} {:?} ({state})", created.name),
                );
            }
            DatanetCommand::Upload { datanet, file } => {
                let uploaded = upload(common, datanet, &file, &client).await?;
                common.print(uploaded.clone(), describe_upload(&uploaded));
            }
            DatanetCommand::Contribute {
                datanet,
                file,
                licence,
            } => {
                let uploaded = upload(common, datanet, &file, &client).await?;
                let field = |name: &str| uploaded[name].clone();
                let call = IDatanets::contributeCall {
                    datanetId: datanet,
                    contentHash: serde_json::from_value(field("contentHash"))?,
                    rows: serde_json::from_value(field("rows"))?,
                    size: serde_json::from_value(field("size"))?,
                    licence,
                };
                let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
                let event = events::<IDatanets::Contributed>(&receipt)
                    .pop()
                    .context("no Contributed event")?;
                common.print(
                    json!({"contributionId": event.contributionId.to_string(),
                           "datanetId": datanet.to_string(), "contentHash": event.contentHash,
                           "rows": event.rows, "size": event.size, "tx": receipt.transaction_hash}),
                    format!(
                        "{}\nSubmitted contribution {} to datanet {datanet}, pending approval",
                        describe_upload(&uploaded),
                        event.contributionId
                    ),
                );
            }
            DatanetCommand::Approve {
                datanet,
                contributions,
                unchecked,
            } => {
                if !unchecked {
                    check_declared(&client, &common.api_url, &contributions).await?;
                }
                let fee = client
                    .view(
                        DATANETS,
                        &IDatanets::versionFeeCall {
                            datanetId: datanet,
                            contributionIds: contributions.clone(),
                        },
                    )
                    .await?;
                let call = IDatanets::approveCall {
                    datanetId: datanet,
                    contributionIds: contributions,
                };
                let receipt = client.send(DATANETS, &call, fee).await?;
                let version = events::<IDatanets::VersionCreated>(&receipt)
                    .pop()
                    .context("no VersionCreated event")?;
                common.print(
                    json!({"datanetId": datanet.to_string(), "version": version.version,
                           "root": version.root, "fee": fee.to_string(),
                           "contributionIds": ids(&version.contributionIds),
                           "tx": receipt.transaction_hash}),
                    format!(
                        "Datanet {datanet} version {}: {} contributions approved, root {}, fee {}",
                        version.version,
                        version.contributionIds.len(),
                        version.root,
                        open(fee)
                    ),
                );
            }
            DatanetCommand::Reject {
                datanet,
                contributions,
                reason,
            } => {
                let call = IDatanets::rejectCall {
                    datanetId: datanet,
                    contributionIds: contributions.clone(),
                    reasonCode: reason,
                };
                let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
                common.print(
                    json!({"datanetId": datanet.to_string(), "rejected": ids(&contributions),
                           "reasonCode": reason, "tx": receipt.transaction_hash}),
                    format!(
                        "Rejected {} contributions of datanet {datanet} (reason {reason})",
                        contributions.len()
                    ),
                );
            }
            DatanetCommand::List => {
                let count = client
                    .view(DATANETS, &IDatanets::datanetCountCall {})
                    .await?;
                let mut all = Vec::new();
                let mut text = format!(
                    "{:>4}  {:<28} {:<42} {:>8} {:>13} {:>8}",
                    "id", "name", "owner", "versions", "contributions", "approved"
                );
                for id in 1..=count.to::<u64>() {
                    let d = datanet(&client, U256::from(id)).await?;
                    text.push_str(&format!(
                        "\n{:>4}  {:<28} {:<42} {:>8} {:>13} {:>8}",
                        id, d.name, d.owner, d.versionCount, d.contributionCount, d.approvedCount
                    ));
                    all.push(datanet_json(&d));
                }
                common.print(Value::Array(all), text);
            }
            DatanetCommand::Show { datanet: id } => show(common, &client, id).await?,
            DatanetCommand::Price {
                datanet,
                price_per_row,
                approval,
            } => {
                super::access::set_price(common, &client, (datanet, price_per_row, approval))
                    .await?
            }
            DatanetCommand::Access { command } => {
                super::access::run(common, &client, command).await?
            }
        }
        Ok(())
    })
}

/// Refuses contributions whose declared rows or size differ from the file the node holds (the
/// chain takes what a contributor declares); warns of those it cannot check.
async fn check_declared(client: &Client, api_url: &str, ids: &[U256]) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let reader = openledger_flywheel::jobs::RowsReader::Signer { model: None };
    for &id in ids {
        let c = client
            .view(
                DATANETS,
                &IDatanets::getContributionCall { contributionId: id },
            )
            .await?;
        let hash = c.contentHash;
        let (query, headers) =
            openledger_flywheel::jobs::read_credentials(client, &reader, hash).await?;
        let mut request = http.get(format!(
            "{}/contributions/{hash}?{}",
            api_url.trim_end_matches('/'),
            query.trim_start_matches('&')
        ));
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the content API at {api_url}"))?;
        let status = response.status();
        let manifest: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            // Not held here (uploaded to another node), or not readable by the signer.
            eprintln!(
                "warning: contribution {id}'s file {hash} could not be checked ({status}: {})",
                manifest["error"].as_str().unwrap_or("no reason")
            );
            continue;
        }
        let (rows, size) = (manifest["rows"].as_u64(), manifest["size"].as_u64());
        if (rows, size) != (Some(c.rows), Some(c.size)) {
            anyhow::bail!(
                "contribution {id} declares {} rows and {} bytes, but its file {hash} has {} rows \
                 and {} bytes: reject it (openledger datanet reject {} {id})",
                c.rows,
                c.size,
                rows.unwrap_or_default(),
                size.unwrap_or_default(),
                c.datanetId
            );
        }
    }
    Ok(())
}

async fn datanet(client: &Client, id: U256) -> anyhow::Result<IDatanets::Datanet> {
    client
        .view(DATANETS, &IDatanets::getDatanetCall { datanetId: id })
        .await
}

async fn show(common: &Common, client: &Client, id: U256) -> anyhow::Result<()> {
    let d = datanet(client, id).await?;
    let contribution_ids = client
        .view(
            DATANETS,
            &IDatanets::contributionsOfCall {
                datanetId: id,
                offset: 0,
                limit: u64::MAX,
            },
        )
        .await?;
    let mut json = datanet_json(&d);
    let mut text = format!(
        "Datanet {id}: {}\n  owner      {}\n  summary    {}\n  tags       {}\n  licence    {}\n  \
         status     {}, {}\n  approved   {} contributions, {} rows, {} bytes\n",
        d.name,
        d.owner,
        d.summary,
        d.tags.join(", "),
        d.licence,
        if d.published { "published" } else { "draft" },
        if d.isPublic { "public" } else { "private" },
        d.approvedCount,
        d.approvedRows,
        d.approvedBytes
    );
    text.push_str("\nContributions\n");
    let mut contributions = Vec::new();
    for contribution_id in contribution_ids {
        let c = client
            .view(
                DATANETS,
                &IDatanets::getContributionCall {
                    contributionId: contribution_id,
                },
            )
            .await?;
        text.push_str(&format!(
            "  {:>4}  {:<9} {} {:>6} rows {:>9} bytes  {}\n",
            c.id,
            format!("{:?}", c.status),
            c.contributor,
            c.rows,
            c.size,
            c.contentHash
        ));
        contributions.push(json!({"id": c.id.to_string(), "contributor": c.contributor,
            "contentHash": c.contentHash, "rows": c.rows, "size": c.size,
            "status": format!("{:?}", c.status), "version": c.version, "reasonCode": c.reasonCode}));
    }
    text.push_str("\nVersions\n");
    let mut versions = Vec::new();
    for number in 1..=d.versionCount {
        let v = client
            .view(
                DATANETS,
                &IDatanets::getVersionCall {
                    datanetId: id,
                    version: number,
                },
            )
            .await?;
        text.push_str(&format!(
            "  v{number}  {} contributions  root {}\n",
            v.approvedCount, v.root
        ));
        versions.push(
            json!({"number": number, "root": v.root, "approvedCount": v.approvedCount,
            "rows": v.rows, "size": v.size, "contributionIds": ids(&v.contributionIds)}),
        );
    }
    json["contributions"] = Value::Array(contributions);
    json["versions"] = Value::Array(versions);
    common.print(json, text.trim_end().to_string());
    Ok(())
}

fn ids(ids: &[U256]) -> Vec<String> {
    ids.iter().map(U256::to_string).collect()
}

fn datanet_json(d: &IDatanets::Datanet) -> Value {
    json!({"id": d.id.to_string(), "owner": d.owner, "name": d.name, "summary": d.summary,
        "tags": d.tags, "dataType": d.dataType, "licence": d.licence, "public": d.isPublic,
        "published": d.published, "versionCount": d.versionCount,
        "contributionCount": d.contributionCount, "approvedCount": d.approvedCount,
        "approvedRows": d.approvedRows, "approvedBytes": d.approvedBytes})
}

/// Uploads `file` to the content API, checking the quota of `contributor` too; returns the
/// API's answer.
async fn upload(
    common: &Common,
    datanet: U256,
    file: &std::path::Path,
    client: &Client,
) -> anyhow::Result<Value> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file needs a UTF-8 name")?
        .to_string();
    upload_bytes(&common.api_url, datanet, name, bytes, client).await
}

/// Uploads a file's `bytes` to the content API at `api_url`, signed by `client`'s account,
/// whose quota it counts against; returns the API's answer.
pub(crate) async fn upload_bytes(
    api_url: &str,
    datanet: U256,
    name: String,
    bytes: Vec<u8>,
    client: &Client,
) -> anyhow::Result<Value> {
    let chain_id = client.chain_id().await?;
    let message = upload_message(
        chain_id,
        datanet,
        &name,
        alloy_primitives::keccak256(&bytes),
    );
    let signature = client.sign_message(&message)?;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    let response = reqwest::Client::new()
        .post(format!("{api_url}/datanets/{datanet}/files"))
        .header(
            SIGNATURE_HEADER,
            alloy_primitives::hex::encode_prefixed(signature.as_bytes()),
        )
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("cannot reach the content API at {api_url}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("the content API answered {status} without JSON"))?;
    if !status.is_success() {
        anyhow::bail!(
            "upload refused ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(body)
}

fn describe_upload(uploaded: &Value) -> String {
    format!(
        "Uploaded {}: {} rows, {} bytes, content hash {}",
        uploaded["fileName"].as_str().unwrap_or("?"),
        uploaded["rows"],
        uploaded["size"],
        uploaded["contentHash"].as_str().unwrap_or("?")
    )
}
