//! Builds the span index of every approved datanet version, in the background, with the base
//! model's tokenizer, into the [`IndexRegistry`] that serving and challenges read.
//!
//! It watches the chain rather than being told: every second it lists the datanets' versions
//! and builds those with no index yet, so a restart picks up whatever a crash interrupted (an
//! index is renamed into place only once whole).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::U256;
use axum::{Json, Router, extract::Path, extract::State, routing::get};
use openledger_ml::checkpoint::TOKENIZER_FILE;
use openledger_primitives::addresses::DATANETS;
use openledger_protocol::abi::IDatanets;
use serde::Serialize;

use crate::client::Client;
use crate::index::index_rows;
use crate::jobs::{DatanetVersion, RowsReader, version_rows};
use crate::shared::{ApiError, Flywheel};
use openledger_attribution::index::MAX_TOKENS;

/// How often the chain is checked for new versions.
const POLL: Duration = Duration::from_secs(1);

/// Where a version's index stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "status")]
enum IndexStatus {
    Building,
    Ready,
    Failed { error: String },
}

/// The indexing service.
pub struct Indexer {
    flywheel: Arc<Flywheel>,
    status: Mutex<HashMap<(U256, u64), IndexStatus>>,
}

impl Indexer {
    /// Starts watching the chain.
    pub fn start(flywheel: Arc<Flywheel>) -> Arc<Self> {
        let indexer = Arc::new(Self {
            flywheel,
            status: Mutex::default(),
        });
        let worker = indexer.clone();
        tokio::spawn(async move {
            let client = worker.flywheel.chain.clone();
            loop {
                if let Err(e) = worker.scan(&client).await {
                    tracing::debug!("index scan: {e:#}");
                }
                tokio::time::sleep(POLL).await;
            }
        });
        indexer
    }

    /// Builds the index of every version that has none and has not failed.
    async fn scan(&self, client: &Client) -> anyhow::Result<()> {
        let count = client
            .view(DATANETS, &IDatanets::datanetCountCall {})
            .await?;
        for datanet in 1..=count.to::<u64>() {
            let datanet = U256::from(datanet);
            let info = client
                .view(DATANETS, &IDatanets::getDatanetCall { datanetId: datanet })
                .await?;
            for version in 1..=info.versionCount {
                let known = self.get(datanet, version);
                if matches!(known, Some(IndexStatus::Failed { .. }))
                    || self.flywheel.indexes.has(datanet, version)
                {
                    continue;
                }
                self.set(datanet, version, IndexStatus::Building);
                let status = match self
                    .build(client, DatanetVersion { datanet, version })
                    .await
                {
                    Ok(()) => IndexStatus::Ready,
                    Err(e) => {
                        tracing::warn!("cannot index datanet {datanet} version {version}: {e:#}");
                        IndexStatus::Failed {
                            error: format!("{e:#}"),
                        }
                    }
                };
                self.set(datanet, version, status);
            }
        }
        Ok(())
    }

    async fn build(&self, client: &Client, at: DatanetVersion) -> anyhow::Result<()> {
        let reader = RowsReader::Node(self.flywheel.api_token.clone());
        let rows = version_rows(client, (&self.flywheel.api_url, &reader), at).await?;
        let tokenizer = self.flywheel.base.path().await?.join(TOKENIZER_FILE);
        let indexes = self.flywheel.indexes.clone();
        tokio::task::spawn_blocking(move || {
            let built = index_rows(&rows, &tokenizer, MAX_TOKENS)?;
            indexes.install(at.datanet, at.version, &built, &tokenizer)?;
            tracing::info!(
                "indexed datanet {} version {}: {} rows",
                at.datanet,
                at.version,
                rows.len()
            );
            anyhow::Ok(())
        })
        .await?
    }

    fn get(&self, datanet: U256, version: u64) -> Option<IndexStatus> {
        self.status
            .lock()
            .expect("status lock")
            .get(&(datanet, version))
            .cloned()
    }

    fn set(&self, datanet: U256, version: u64, status: IndexStatus) {
        self.status
            .lock()
            .expect("status lock")
            .insert((datanet, version), status);
    }

    /// `GET /datanets/{id}/versions/{v}/index`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/datanets/{id}/versions/{version}/index", get(index_status))
            .with_state(self)
    }
}

async fn index_status(
    State(indexer): State<Arc<Indexer>>,
    Path((datanet, version)): Path<(String, u64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let datanet: U256 = datanet
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{datanet:?} is not a datanet id")))?;
    let status = if indexer.flywheel.indexes.has(datanet, version) {
        IndexStatus::Ready
    } else {
        indexer.get(datanet, version).ok_or_else(|| {
            ApiError::not_found(format!(
                "no index of datanet {datanet} version {version}: not approved yet, or not seen yet"
            ))
        })?
    };
    let mut body = serde_json::to_value(status).expect("status serializes");
    body["datanetId"] = datanet.to_string().into();
    body["version"] = version.into();
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{ROWS, TestChain, base_model, content_api};

    async fn status(indexer: &Arc<Indexer>, datanet: U256, version: u64) -> serde_json::Value {
        let request =
            axum::http::Request::get(format!("/datanets/{datanet}/versions/{version}/index"))
                .body(axum::body::Body::empty())
                .unwrap();
        let response = indexer.clone().router().oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn every_approved_version_is_indexed_and_one_whose_rows_are_missing_fails() {
        let tc = TestChain::start(3);
        let dir = tempfile::tempdir().unwrap();
        base_model(&dir.path().join("base"));
        let flywheel = tc.flywheel(dir.path(), &content_api().await);
        let (datanet, contribution) = tc.datanet().await;
        let indexer = Indexer::start(flywheel.clone());

        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while status(&indexer, datanet, 1).await["status"] != "ready" {
            assert!(tokio::time::Instant::now() < deadline, "never indexed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (attribution, _) = flywheel
            .indexes
            .attribute(datanet, 1, "Q:", ROWS[0])
            .unwrap();
        assert_eq!(attribution.weights.len(), 1);
        assert_eq!(
            attribution.weights[0].contribution,
            contribution.to_string()
        );
        assert_eq!(attribution.weights[0].ppm, 1_000_000);

        // Version 2 adds a contribution whose content the API does not hold.
        let owner = tc.account(0);
        let contribute = IDatanets::contributeCall {
            datanetId: datanet,
            contentHash: alloy_primitives::B256::repeat_byte(0xee),
            rows: 1,
            size: 10,
            licence: "CC-BY-4.0".into(),
        };
        let receipt = tc
            .account(1)
            .send(DATANETS, &contribute, U256::ZERO)
            .await
            .unwrap();
        let missing = crate::client::events::<IDatanets::Contributed>(&receipt)[0].contributionId;
        let approve = IDatanets::approveCall {
            datanetId: datanet,
            contributionIds: vec![missing],
        };
        let fee = owner
            .view(
                DATANETS,
                &IDatanets::versionFeeCall {
                    datanetId: datanet,
                    contributionIds: vec![missing],
                },
            )
            .await
            .unwrap();
        owner.send(DATANETS, &approve, fee).await.unwrap();
        let failed = loop {
            let body = status(&indexer, datanet, 2).await;
            if body["status"] == "failed" {
                break body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never failed: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("did not give the rows of"),
            "{failed}"
        );
        assert_eq!(
            status(&indexer, datanet, 3).await["status"],
            serde_json::Value::Null
        );
    }
}
