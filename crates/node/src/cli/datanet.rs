//! `openledger datanet ...`.

use std::path::PathBuf;

use std::fmt;

use alloy_primitives::{Address, B256, U256};
use anyhow::Context;
use clap::{Args, Subcommand};
use openledger_primitives::addresses::DATANETS;
use openledger_protocol::abi::IDatanets;
use serde::Serialize;
use serde_json::Value;

use super::report::{Id, Wei};
use super::{Client, Common, block_on, event, parse_open, text_hash};
use openledger_flywheel::jobs::send_to_api;
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
    Create(Create),
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

#[derive(Debug, Args)]
struct Create {
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
}

/// Runs `openledger datanet`.
pub fn run(args: DatanetArgs) -> anyhow::Result<()> {
    block_on(async move {
        let common = &args.common;
        let client = common.client()?;
        use DatanetCommand as C;
        match args.command {
            C::Create(create) => common.report(&create.execute(&client).await?),
            C::Upload { datanet, file } => {
                common.report(&Uploaded(upload(common, datanet, &file, &client).await?))
            }
            C::Contribute {
                datanet,
                file,
                licence,
            } => {
                let uploaded = Uploaded(upload(common, datanet, &file, &client).await?);
                common.report(&contribute(&client, datanet, uploaded, licence).await?)
            }
            C::Approve {
                datanet,
                contributions,
                unchecked,
            } => {
                if !unchecked {
                    check_declared(&client, &common.api_url, &contributions).await?;
                }
                common.report(&approve(&client, datanet, contributions).await?)
            }
            C::Reject {
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
                common.report(&Rejected {
                    datanet_id: Id(datanet),
                    rejected: contributions.into_iter().map(Id).collect(),
                    reason_code: reason,
                    tx: receipt.transaction_hash,
                })
            }
            C::List => common.report(&list(&client).await?),
            C::Show { datanet } => common.report(&show(&client, datanet).await?),
            C::Price {
                datanet,
                price_per_row,
                approval,
            } => {
                super::access::set_price(common, &client, (datanet, price_per_row, approval)).await
            }
            C::Access { command } => super::access::run(common, &client, command).await,
        }
    })
}

/// A datanet created, and published unless a draft.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    datanet_id: Id,
    #[serde(skip)]
    name: String,
    published: bool,
    fee: Option<Wei>,
    tx: B256,
}

impl Create {
    async fn execute(self, client: &Client) -> anyhow::Result<Created> {
        let call = IDatanets::createDatanetCall {
            name: self.name,
            summary: self.summary,
            descriptionHash: text_hash(self.description.as_deref()),
            tags: self.tags,
            dataType: self.data_type,
            licence: self.licence,
            isPublic: !self.private,
        };
        let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
        let created = event::<IDatanets::DatanetCreated>(&receipt)?;
        let id = created.datanetId;
        let fee = if self.draft {
            None
        } else {
            let fee = client
                .view(DATANETS, &IDatanets::publishFeeCall { datanetId: id })
                .await?;
            let publish = IDatanets::publishCall { datanetId: id };
            client.send(DATANETS, &publish, fee).await?;
            Some(Wei(fee))
        };
        Ok(Created {
            datanet_id: Id(id),
            name: created.name,
            published: fee.is_some(),
            fee,
            tx: receipt.transaction_hash,
        })
    }
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Created datanet {} {:?} ", self.datanet_id, self.name)?;
        match self.fee {
            Some(fee) => write!(f, "(published, fee {fee})"),
            None => write!(f, "(draft)"),
        }
    }
}

/// The content API's answer to an upload, as it gave it.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
struct Uploaded(Value);

impl fmt::Display for Uploaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.0;
        write!(
            f,
            "Uploaded {}: {} rows, {} bytes, content hash {}",
            u["fileName"].as_str().unwrap_or("?"),
            u["rows"],
            u["size"],
            u["contentHash"].as_str().unwrap_or("?")
        )
    }
}

/// A file submitted as a contribution.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Contributed {
    #[serde(skip)]
    uploaded: Uploaded,
    contribution_id: Id,
    datanet_id: Id,
    content_hash: B256,
    rows: u64,
    size: u64,
    tx: B256,
}

async fn contribute(
    client: &Client,
    datanet: U256,
    uploaded: Uploaded,
    licence: String,
) -> anyhow::Result<Contributed> {
    let field = |name: &str| uploaded.0[name].clone();
    let call = IDatanets::contributeCall {
        datanetId: datanet,
        contentHash: serde_json::from_value(field("contentHash"))?,
        rows: serde_json::from_value(field("rows"))?,
        size: serde_json::from_value(field("size"))?,
        licence,
    };
    let receipt = client.send(DATANETS, &call, U256::ZERO).await?;
    let event = event::<IDatanets::Contributed>(&receipt)?;
    Ok(Contributed {
        uploaded,
        contribution_id: Id(event.contributionId),
        datanet_id: Id(datanet),
        content_hash: event.contentHash,
        rows: event.rows,
        size: event.size,
        tx: receipt.transaction_hash,
    })
}

impl fmt::Display for Contributed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.uploaded)?;
        write!(
            f,
            "Submitted contribution {} to datanet {}, pending approval",
            self.contribution_id, self.datanet_id
        )
    }
}

/// A new version of approved contributions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Approved {
    datanet_id: Id,
    version: u64,
    root: B256,
    fee: Wei,
    contribution_ids: Vec<Id>,
    tx: B256,
}

async fn approve(client: &Client, datanet: U256, ids: Vec<U256>) -> anyhow::Result<Approved> {
    let quote = IDatanets::versionFeeCall {
        datanetId: datanet,
        contributionIds: ids.clone(),
    };
    let fee = client.view(DATANETS, &quote).await?;
    let call = IDatanets::approveCall {
        datanetId: datanet,
        contributionIds: ids,
    };
    let receipt = client.send(DATANETS, &call, fee).await?;
    let version = event::<IDatanets::VersionCreated>(&receipt)?;
    Ok(Approved {
        datanet_id: Id(datanet),
        version: version.version,
        root: version.root,
        fee: Wei(fee),
        contribution_ids: version.contributionIds.into_iter().map(Id).collect(),
        tx: receipt.transaction_hash,
    })
}

impl fmt::Display for Approved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Datanet {} version {}: {} contributions approved, root {}, fee {}",
            self.datanet_id,
            self.version,
            self.contribution_ids.len(),
            self.root,
            self.fee
        )
    }
}

/// Contributions rejected.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rejected {
    datanet_id: Id,
    rejected: Vec<Id>,
    reason_code: u32,
    tx: B256,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rejected {} contributions of datanet {} (reason {})",
            self.rejected.len(),
            self.datanet_id,
            self.reason_code
        )
    }
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

/// A datanet, as `datanet list` and `datanet show` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Datanet {
    id: Id,
    owner: Address,
    name: String,
    summary: String,
    tags: Vec<String>,
    data_type: String,
    licence: String,
    public: bool,
    published: bool,
    version_count: u64,
    contribution_count: u64,
    approved_count: u64,
    approved_rows: u64,
    approved_bytes: u64,
}

impl From<IDatanets::Datanet> for Datanet {
    fn from(d: IDatanets::Datanet) -> Self {
        Self {
            id: Id(d.id),
            owner: d.owner,
            name: d.name,
            summary: d.summary,
            tags: d.tags,
            data_type: d.dataType,
            licence: d.licence,
            public: d.isPublic,
            published: d.published,
            version_count: d.versionCount,
            contribution_count: d.contributionCount,
            approved_count: d.approvedCount,
            approved_rows: d.approvedRows,
            approved_bytes: d.approvedBytes,
        }
    }
}

impl Datanet {
    async fn fetch(client: &Client, id: U256) -> anyhow::Result<Self> {
        let call = IDatanets::getDatanetCall { datanetId: id };
        Ok(client.view(DATANETS, &call).await?.into())
    }
}

/// Every datanet, a table in text.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Datanets(Vec<Datanet>);

async fn list(client: &Client) -> anyhow::Result<Datanets> {
    let count = client
        .view(DATANETS, &IDatanets::datanetCountCall {})
        .await?;
    let mut all = Vec::new();
    for id in 1..=count.to::<u64>() {
        all.push(Datanet::fetch(client, U256::from(id)).await?);
    }
    Ok(Datanets(all))
}

impl fmt::Display for Datanets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>4}  {:<28} {:<42} {:>8} {:>13} {:>8}",
            "id", "name", "owner", "versions", "contributions", "approved"
        )?;
        for d in &self.0 {
            write!(
                f,
                "\n{:>4}  {:<28} {:<42} {:>8} {:>13} {:>8}",
                d.id, d.name, d.owner, d.version_count, d.contribution_count, d.approved_count
            )?;
        }
        Ok(())
    }
}

/// A datanet with its contributions and versions.
#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    datanet: Datanet,
    contributions: Vec<Contribution>,
    versions: Vec<Version>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Contribution {
    id: Id,
    contributor: Address,
    content_hash: B256,
    rows: u64,
    size: u64,
    status: String,
    version: u64,
    reason_code: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    number: u64,
    root: B256,
    approved_count: u64,
    rows: u64,
    size: u64,
    contribution_ids: Vec<Id>,
}

async fn show(client: &Client, id: U256) -> anyhow::Result<Shown> {
    let datanet = Datanet::fetch(client, id).await?;
    let all = IDatanets::contributionsOfCall {
        datanetId: id,
        offset: 0,
        limit: u64::MAX,
    };
    let mut contributions = Vec::new();
    for contribution_id in client.view(DATANETS, &all).await? {
        let call = IDatanets::getContributionCall {
            contributionId: contribution_id,
        };
        let c = client.view(DATANETS, &call).await?;
        contributions.push(Contribution {
            id: Id(c.id),
            contributor: c.contributor,
            content_hash: c.contentHash,
            rows: c.rows,
            size: c.size,
            status: format!("{:?}", c.status),
            version: c.version,
            reason_code: c.reasonCode,
        });
    }
    let mut versions = Vec::new();
    let Datanet { version_count, .. } = datanet;
    for number in 1..=version_count {
        let call = IDatanets::getVersionCall {
            datanetId: id,
            version: number,
        };
        let v = client.view(DATANETS, &call).await?;
        versions.push(Version {
            number,
            root: v.root,
            approved_count: v.approvedCount,
            rows: v.rows,
            size: v.size,
            contribution_ids: v.contributionIds.into_iter().map(Id).collect(),
        });
    }
    Ok(Shown {
        datanet,
        contributions,
        versions,
    })
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.datanet;
        writeln!(f, "Datanet {}: {}", d.id, d.name)?;
        writeln!(f, "  owner      {}", d.owner)?;
        writeln!(f, "  summary    {}", d.summary)?;
        writeln!(f, "  tags       {}", d.tags.join(", "))?;
        writeln!(f, "  licence    {}", d.licence)?;
        let published = if d.published { "published" } else { "draft" };
        let public = if d.public { "public" } else { "private" };
        writeln!(f, "  status     {published}, {public}")?;
        let (count, rows, bytes) = (d.approved_count, d.approved_rows, d.approved_bytes);
        writeln!(
            f,
            "  approved   {count} contributions, {rows} rows, {bytes} bytes"
        )?;
        write!(f, "\nContributions")?;
        for c in &self.contributions {
            write!(
                f,
                "\n  {:>4}  {:<9} {} {:>6} rows {:>9} bytes  {}",
                c.id, c.status, c.contributor, c.rows, c.size, c.content_hash
            )?;
        }
        write!(f, "\n\nVersions")?;
        for v in &self.versions {
            let (number, count, root) = (v.number, v.approved_count, v.root);
            write!(f, "\n  v{number}  {count} contributions  root {root}")?;
        }
        Ok(())
    }
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
    let request = reqwest::Client::new()
        .post(format!("{api_url}/datanets/{datanet}/files"))
        .header(
            SIGNATURE_HEADER,
            alloy_primitives::hex::encode_prefixed(signature.as_bytes()),
        )
        .multipart(form);
    let response = send_to_api(request, api_url, "upload refused").await?;
    let status = response.status();
    response
        .json()
        .await
        .with_context(|| format!("the content API answered {status} without JSON"))
}
