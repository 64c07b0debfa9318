//! Training on datanet versions: which contributions a version holds comes from the chain, their
//! rows from the node's content API (each labelled with its contribution id, so attribution can
//! credit it), and the trained adapter is registered on-chain by the model's creator.

use std::path::Path;
use std::str::FromStr;

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_rpc_types_eth::TransactionReceipt;
use anyhow::{Context, bail};
use openledger_content::{Format, row_text};
use openledger_ml::data::{Row, Turn};
use openledger_ml::factory::METRICS_FILE;
use openledger_ml::lora::ADAPTER_WEIGHTS_FILE;
use openledger_primitives::addresses::{DATANETS, MODELS};
use openledger_protocol::abi::{IDatanets, IModels};
use serde_json::Value;

use crate::client::Client;
use crate::signing::{SIGNATURE_HEADER, rows_message};

/// A datanet at one of its versions, written `ID@VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatanetVersion {
    /// The datanet.
    pub datanet: U256,
    /// One of its approval rounds, from 1.
    pub version: u64,
}

impl std::fmt::Display for DatanetVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.datanet, self.version)
    }
}

impl FromStr for DatanetVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, version) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?} is not ID@VERSION, for example 1@2"))?;
        let datanet = id
            .parse::<U256>()
            .ok()
            .filter(|d| !id.is_empty() && !d.is_zero())
            .ok_or_else(|| format!("{id:?} is not a datanet id (1, 2, ...)"))?;
        let version = version
            .parse()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| format!("{version:?} is not a version (1, 2, ...)"))?;
        Ok(Self { datanet, version })
    }
}

/// The versions a model learns from, one for each datanet: the latest given, since a version
/// covers every earlier one (`1@1 1@3` is `1@3`; training on both would read version 1's rows
/// twice, and registering the first would leave version 3's contributions unpaid).
pub fn latest_versions(versions: &[DatanetVersion]) -> Vec<DatanetVersion> {
    let mut latest: Vec<DatanetVersion> = Vec::new();
    for at in versions {
        match latest.iter_mut().find(|v| v.datanet == at.datanet) {
            Some(kept) => kept.version = kept.version.max(at.version),
            None => latest.push(*at),
        }
    }
    latest
}

/// The version of each of model `model`'s datanets (`datanet_ids`, in its order) among
/// `versions`, the latest of each: what its artifact registers. An error names a datanet the
/// model learns from that is missing, or one given that it does not learn from (its rows would
/// shape the adapter, yet its contributors could never be paid).
pub fn model_versions(
    model: U256,
    datanet_ids: &[U256],
    versions: &[DatanetVersion],
) -> anyhow::Result<Vec<u64>> {
    let latest = latest_versions(versions);
    if let Some(extra) = latest.iter().find(|v| !datanet_ids.contains(&v.datanet)) {
        bail!(
            "datanet {} is not one of model {model}'s datanets ({})",
            extra.datanet,
            datanet_ids
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    datanet_ids
        .iter()
        .map(|id| {
            latest
                .iter()
                .find(|v| v.datanet == *id)
                .map(|v| v.version)
                .with_context(|| {
                    format!("model {model} learns from datanet {id} too: add {id}@VERSION")
                })
        })
        .collect()
}

/// Who reads datanet rows from the content API, which serves a private datanet's rows only to
/// those who may read them.
#[derive(Debug, Clone)]
pub enum RowsReader {
    /// The node's own services, by the token the node gave them.
    Node(String),
    /// The account that signs for the client (when it has one), reading for the model whose
    /// training access lets it read.
    Signer {
        /// The model trained on the rows.
        model: Option<U256>,
    },
}

/// How long a signed read of a file stays good: long enough to page through it.
const SIGNED_READ_SECS: u64 = 300;

/// The rows of the given datanet versions (the latest of each datanet), in order.
pub async fn versions_rows(
    client: &Client,
    api: (&str, &RowsReader),
    versions: &[DatanetVersion],
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for at in latest_versions(versions) {
        rows.extend(version_rows(client, api, at).await?);
    }
    Ok(rows)
}

/// The contributions datanet version `at` covers: as `IDatanets` defines a version, every
/// contribution approved up to it, round by round in approval order. Everything that asks which
/// contributions are in a version (training, indexing, attribution) asks here.
pub async fn version_contributions(
    client: &Client,
    at: DatanetVersion,
) -> anyhow::Result<Vec<U256>> {
    let round = |version: u64| async move {
        let call = IDatanets::getVersionCall {
            datanetId: at.datanet,
            version,
        };
        let version = client
            .view(DATANETS, &call)
            .await
            .with_context(|| format!("datanet {}@{version}", at.datanet))?;
        anyhow::Ok(version.contributionIds)
    };
    // The version asked for first, so that one that does not exist is named as such.
    let last = round(at.version).await?;
    let mut ids = Vec::new();
    for version in 1..at.version {
        ids.extend(round(version).await?);
    }
    ids.extend(last);
    Ok(ids)
}

/// The rows of every contribution version `at` covers (see [`version_contributions`]), in
/// order, each labelled `<contribution>:<row>` with its contribution id as contributor.
pub async fn version_rows(
    client: &Client,
    api: (&str, &RowsReader),
    at: DatanetVersion,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for id in &version_contributions(client, at).await? {
        let call = IDatanets::getContributionCall {
            contributionId: *id,
        };
        let contribution = client.view(DATANETS, &call).await?;
        let read = contribution_rows(client, api, contribution.contentHash).await?;
        rows.extend(read.into_iter().enumerate().map(|(i, row)| Row {
            id: format!("{id}:{i}"),
            contributor: id.to_string(),
            ..row
        }));
    }
    if rows.is_empty() {
        bail!(
            "datanet {} version {} holds no rows",
            at.datanet,
            at.version
        );
    }
    Ok(rows)
}

/// Every row of a contribution's file, paged from the content API: its text read by the one
/// rule for what a row says ([`openledger_content::row_text`]), and the conversation of a JSONL
/// row that is one (alpaca, `messages`, ShareGPT), which training writes in the chat template.
async fn contribution_rows(
    client: &Client,
    (api_url, reader): (&str, &RowsReader),
    hash: B256,
) -> anyhow::Result<Vec<Row>> {
    let http = reqwest::Client::new();
    let (query, authorization) = read_credentials(client, reader, hash).await?;
    let mut rows = Vec::new();
    loop {
        let url = format!(
            "{api_url}/contributions/{hash}/rows?offset={}{query}",
            rows.len()
        );
        let mut request = http.get(&url);
        for (name, value) in &authorization {
            request = request.header(name.as_str(), value.as_str());
        }
        let refused = format!("the content API did not give the rows of {hash}");
        let response = send_to_api(request, api_url, &refused).await?;
        let page: Value = response
            .json()
            .await
            .context("the content API sent rows that are not JSON")?;
        let total = page["total"].as_u64().context("no row total")? as usize;
        let format: Format = serde_json::from_value(page["format"].clone())
            .context("the content API named no format")?;
        let got: Vec<Row> = serde_json::from_value::<Vec<String>>(page["rows"].clone())?
            .into_iter()
            .map(|raw| Row {
                text: row_text(format, &raw),
                messages: conversation(format, &raw),
                ..Row::default()
            })
            .collect();
        if got.is_empty() && rows.len() < total {
            bail!("the content API stopped at row {} of {total}", rows.len());
        }
        rows.extend(got);
        if rows.len() >= total {
            return Ok(rows);
        }
    }
}

/// The conversation a JSONL row holds, if it is one that training can write in a chat template.
fn conversation(format: Format, raw: &str) -> Vec<Turn> {
    if format != Format::Jsonl {
        return Vec::new();
    }
    serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|record| Row::from_record(&record).ok())
        .map(|row| row.messages)
        .unwrap_or_default()
}

/// The query and headers that say who reads file `hash`: the node's token, or a signature of
/// the reader's over the file with a short expiry (nothing, for a client without a signer).
pub async fn read_credentials(
    client: &Client,
    reader: &RowsReader,
    hash: B256,
) -> anyhow::Result<(String, Vec<(String, String)>)> {
    match reader {
        RowsReader::Node(token) => Ok((
            String::new(),
            vec![("authorization".into(), format!("Bearer {token}"))],
        )),
        RowsReader::Signer { model } => {
            if client.sender().is_err() {
                return Ok((String::new(), Vec::new()));
            }
            // The chain's time, or the wall clock when no block was sealed for a while.
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let until = client.latest_timestamp().await?.max(wall) + SIGNED_READ_SECS;
            let message = rows_message(client.chain_id().await?, hash, until);
            let signature = client.sign_message(&message)?;
            let mut query = format!("&until={until}");
            if let Some(model) = model {
                query.push_str(&format!("&model={model}"));
            }
            let header = (
                SIGNATURE_HEADER.to_string(),
                alloy_primitives::hex::encode_prefixed(signature.as_bytes()),
            );
            Ok((query, vec![header]))
        }
    }
}

/// Writes rows as JSONL, the format `openledger train --data` reads.
pub fn write_rows(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<String> = rows
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The hash of a file, as the chain records adapters and metrics.
pub fn file_hash(path: &Path) -> anyhow::Result<B256> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(keccak256(bytes))
}

/// Why an adapter for a model cannot be registered, found before any training.
#[derive(Debug, thiserror::Error)]
pub enum Untrainable {
    /// Not Approved, Trained or Deployed.
    #[error("model {0} is {1:?}: {fix}", fix = status_fix(*.1))]
    Status(U256, IModels::Status),
    /// Only the creator registers artifacts.
    #[error(
        "NotCreator: {caller} is not model {model}'s creator {creator}: only the creator registers its adapters"
    )]
    NotCreator {
        /// The model.
        model: U256,
        /// Who asked.
        caller: Address,
        /// Who may.
        creator: Address,
    },
    /// The datanet versions are not one for each of the model's datanets, or one does not
    /// exist yet.
    #[error("datanets: {0:#}")]
    Datanets(anyhow::Error),
    /// The model has no training access to a datanet version (`IDatanets.requestAccess`).
    #[error(
        "NoDataAccess: model {model} has no access to datanet {at}: its creator buys it first \
         (openledger datanet access request {model} {at})"
    )]
    NoAccess {
        /// The model.
        model: U256,
        /// The version it may not train on.
        at: DatanetVersion,
    },
    /// The chain could not be read.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
}

fn status_fix(status: IModels::Status) -> &'static str {
    match status {
        IModels::Status::Proposed => "it is trained once governance approves it",
        IModels::Status::Retired | IModels::Status::Slashed => "it is not trained any more",
        _ => "no such model",
    }
}

/// Checks, before training, that `caller` may register a new adapter for `model` (`info`) on
/// `versions`: Approved, Trained or Deployed (a new artifact version; a Deployed model serves it
/// once deployed again), by its creator; the datanet version of each of its datanets.
fn check_trainable(
    model: U256,
    info: &IModels::Model,
    caller: Address,
    versions: &[DatanetVersion],
) -> Result<Vec<u64>, Untrainable> {
    use IModels::Status::{Approved, Deployed, Trained};
    if !matches!(info.status, Approved | Trained | Deployed) {
        return Err(Untrainable::Status(model, info.status));
    }
    if info.creator != caller {
        return Err(Untrainable::NotCreator {
            model,
            caller,
            creator: info.creator,
        });
    }
    model_versions(model, &info.datanetIds, versions).map_err(Untrainable::Datanets)
}

/// [`check_trainable`] against the chain now, and every datanet version exists: what a job
/// checks when it is submitted and again when it starts (the model may have been retired while
/// it waited).
pub async fn check_job(
    client: &Client,
    model: U256,
    caller: Address,
    versions: &[DatanetVersion],
) -> Result<Vec<u64>, Untrainable> {
    let info = client
        .view(MODELS, &IModels::getModelCall { modelId: model })
        .await
        .map_err(Untrainable::Unavailable)?;
    let registered = check_trainable(model, &info, caller, versions)?;
    for at in latest_versions(versions) {
        let call = IDatanets::getDatanetCall {
            datanetId: at.datanet,
        };
        let datanet = client
            .view(DATANETS, &call)
            .await
            .map_err(Untrainable::Unavailable)?;
        if at.version > datanet.versionCount {
            return Err(Untrainable::Datanets(anyhow::anyhow!(
                "datanet {} has {} versions: there is no {}@{}",
                at.datanet,
                datanet.versionCount,
                at.datanet,
                at.version
            )));
        }
        let access = IDatanets::hasAccessCall {
            modelId: model,
            datanetId: at.datanet,
            version: at.version,
        };
        if !client
            .view(DATANETS, &access)
            .await
            .map_err(Untrainable::Unavailable)?
        {
            return Err(Untrainable::NoAccess { model, at });
        }
    }
    Ok(registered)
}

/// The adapter hash of `model`'s newest artifact version, if it has one: a job that trained
/// the same weights (run again after a crash) has nothing left to register.
pub async fn newest_artifact(client: &Client, model: U256) -> anyhow::Result<Option<B256>> {
    let info = client
        .view(MODELS, &IModels::getModelCall { modelId: model })
        .await?;
    if info.artifactCount == 0 {
        return Ok(None);
    }
    let call = IModels::getArtifactCall {
        modelId: model,
        version: info.artifactCount,
    };
    Ok(Some(client.view(MODELS, &call).await?.adapterHash))
}

/// An adapter registered as a model's artifact.
pub struct Registered {
    /// The weights' hash, as registered.
    pub adapter_hash: B256,
    /// Its artifact version.
    pub version: u64,
    /// Whether the model serves it now (not Deployed with an earlier version).
    pub current: bool,
    /// The registration's transaction.
    pub receipt: TransactionReceipt,
}

impl Registered {
    /// What happens next, for the user.
    pub fn next_step(&self, model: U256) -> String {
        let registered = format!("model {model}'s artifact version {}", self.version);
        if self.current {
            registered
        } else {
            format!(
                "{registered}, served once the model is deployed again (openledger model deploy \
                 {model} ...); until then it serves its earlier version"
            )
        }
    }
}

/// Registers the adapter in `adapter` as `model`'s next artifact version (signed by the client,
/// which must be the model's creator), trained on `versions`: one for each of the model's
/// datanets. The caller then publishes it ([`publish_adapter`]), so that any node serving the
/// model finds it.
pub async fn register_artifact(
    client: &Client,
    model: U256,
    adapter: &Path,
    versions: &[DatanetVersion],
) -> anyhow::Result<Registered> {
    let info = client
        .view(MODELS, &IModels::getModelCall { modelId: model })
        .await?;
    let versions = model_versions(model, &info.datanetIds, versions)?;
    let adapter_hash = file_hash(&adapter.join(ADAPTER_WEIGHTS_FILE))?;
    let call = IModels::registerArtifactCall {
        modelId: model,
        adapterHash: adapter_hash,
        datanetVersions: versions,
        metricsHash: file_hash(&adapter.join(METRICS_FILE))?,
    };
    let receipt = client.send(MODELS, &call, U256::ZERO).await?;
    let version = crate::client::events::<IModels::ArtifactRegistered>(&receipt)
        .first()
        .context("registerArtifact emitted no ArtifactRegistered")?
        .version;
    Ok(Registered {
        adapter_hash,
        version,
        current: info.status != IModels::Status::Deployed,
        receipt,
    })
}

/// Publishes the adapter in folder `adapter` as model `model`'s (its weights must hash to the
/// registered `adapterHash`) to the content API at `api_url`, signed by `client`'s account
/// (the model's creator). An optional file over the content API's size limit (large gradient
/// sketches) is left out and named in the answer, for the caller to say.
pub async fn publish_adapter(
    client: &Client,
    api_url: &str,
    model: U256,
    adapter: &Path,
) -> anyhow::Result<Published> {
    use openledger_content::adapters::{
        ADAPTER_FILES, CONFIG_FILE, MAX_ADAPTER_FILE_BYTES, WEIGHTS_FILE,
    };
    let read = |name: &str| {
        let path = adapter.join(name);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let (weights, config) = (read(WEIGHTS_FILE)?, read(CONFIG_FILE)?);
    let adapter_hash = keccak256(&weights);
    let message = crate::signing::adapter_message(
        client.chain_id().await?,
        model,
        adapter_hash,
        keccak256(&config),
    );
    let signature = client.sign_message(&message)?;
    let part =
        |bytes: Vec<u8>, name: &'static str| reqwest::multipart::Part::bytes(bytes).file_name(name);
    let mut form = reqwest::multipart::Form::new()
        .part(WEIGHTS_FILE, part(weights, WEIGHTS_FILE))
        .part(CONFIG_FILE, part(config, CONFIG_FILE));
    let mut left_out = Vec::new();
    for name in ADAPTER_FILES.into_iter().skip(2) {
        let Ok(bytes) = read(name) else { continue };
        if bytes.len() as u64 > MAX_ADAPTER_FILE_BYTES {
            left_out.push(name);
            continue;
        }
        form = form.part(name, part(bytes, name));
    }
    let request = reqwest::Client::new()
        .put(format!("{api_url}/models/{model}/adapter"))
        .header(
            crate::signing::SIGNATURE_HEADER,
            alloy_primitives::hex::encode_prefixed(signature.as_bytes()),
        )
        .multipart(form);
    send_to_api(request, api_url, "the content API refused the adapter").await?;
    Ok(Published {
        adapter_hash,
        left_out,
    })
}

/// What [`publish_adapter`] published.
#[derive(Debug)]
pub struct Published {
    /// The weights' hash, which names the adapter.
    pub adapter_hash: B256,
    /// Optional files over the size limit, not published.
    pub left_out: Vec<&'static str>,
}

/// Sends `request` to the node's HTTP API at `api_url` (content and jobs): the response when it
/// succeeded, else an error saying what was `refused` and the node's reason (its JSON `error`).
pub async fn send_to_api(
    request: reqwest::RequestBuilder,
    api_url: &str,
    refused: &str,
) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.with_context(|| {
        format!("cannot reach the node's API at {api_url}; is `openledger dev` running?")
    })?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().await.unwrap_or_default();
        bail!(
            "{refused} ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conversation a contributor uploads to a datanet trains as the same conversation that
    /// a local data file holds, and the node reads its text as `train --data` does.
    #[test]
    fn datanet_conversations_read_as_local_files_read_them() {
        for raw in [
            r#"{"instruction": "Name a colour.", "input": "Briefly.", "output": "Red."}"#,
            r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
            r#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}"#,
        ] {
            let local = Row::from_record(&serde_json::from_str(raw).unwrap()).unwrap();
            assert_eq!(row_text(Format::Jsonl, raw), local.text, "{raw}");
            assert_eq!(conversation(Format::Jsonl, raw), local.messages, "{raw}");
            assert!(!local.messages.is_empty());
        }
        assert!(conversation(Format::Text, r#"{"instruction": "x", "output": "y"}"#).is_empty());
        assert!(conversation(Format::Jsonl, r#"{"text": "plain"}"#).is_empty());
    }

    #[test]
    fn a_published_adapter_carries_every_file_serving_and_attribution_read() {
        use openledger_content::adapters::ADAPTER_FILES;
        for file in [
            ADAPTER_WEIGHTS_FILE,
            openledger_ml::lora::ADAPTER_CONFIG_FILE,
            METRICS_FILE,
            openledger_attribution::INFLUENCE_FILE,
        ] {
            assert!(ADAPTER_FILES.contains(&file), "{file}");
        }
    }

    #[tokio::test]
    async fn a_job_is_refused_what_its_registration_would_be_when_submitted_and_when_started() {
        use crate::testing::TestChain;
        let tc = TestChain::start(4);
        let (datanet, _) = tc.datanet().await;
        let model = tc.approved_model(datanet).await;
        let at = |version| [DatanetVersion { datanet, version }];
        let (creator, other) = (tc.keys[2].address(), tc.keys[1].address());
        let check = |caller, version| {
            let client = tc.client.clone();
            async move { check_job(&client, model, caller, &at(version)).await }
        };
        assert_eq!(check(creator, 1).await.unwrap(), vec![1]);
        assert!(matches!(
            check(other, 1).await,
            Err(Untrainable::NotCreator { .. })
        ));
        let missing = check(creator, 2).await.unwrap_err();
        assert!(matches!(missing, Untrainable::Datanets(_)), "{missing}");
        assert!(missing.to_string().contains("there is no"), "{missing}");
        // Retired while a job waited in the queue: the job is refused when it starts.
        let retire = IModels::retireCall { modelId: model };
        tc.account(2)
            .send(MODELS, &retire, U256::ZERO)
            .await
            .unwrap();
        assert!(matches!(
            check(creator, 1).await,
            Err(Untrainable::Status(_, IModels::Status::Retired))
        ));
    }

    #[test]
    fn the_latest_version_of_each_datanet_stands_for_the_earlier_ones() {
        let at = |s: &str| s.parse::<DatanetVersion>().unwrap();
        assert_eq!(
            latest_versions(&[at("1@1"), at("2@4"), at("1@3"), at("1@2")]),
            vec![at("1@3"), at("2@4")]
        );
    }

    #[test]
    fn datanet_versions_parse_and_bad_ones_say_why() {
        let at: DatanetVersion = "12@3".parse().unwrap();
        assert_eq!((at.datanet, at.version), (U256::from(12), 3));
        for (bad, why) in [
            ("12", "ID@VERSION"),
            ("x@1", "not a datanet id"),
            ("@1", "not a datanet id"),
            ("0@1", "not a datanet id"),
            ("1@0", "not a version"),
            ("1@v2", "not a version"),
        ] {
            let err = bad.parse::<DatanetVersion>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
