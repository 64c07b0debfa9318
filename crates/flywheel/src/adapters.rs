//! Where a node finds a registered adapter it does not hold: its own store of published adapters,
//! then the content APIs of other nodes (`openledger dev --adapter-peer URL`), asked by the hash
//! the chain registered. A fetched adapter is checked against that hash before it is kept, so a
//! peer can withhold an adapter but never substitute one.

use std::time::Duration;

use alloy_primitives::{Address, B256};
use anyhow::{Context, bail};
use openledger_content::AdapterStore;
use openledger_content::adapters::{ADAPTER_FILES, MAX_ADAPTER_FILE_BYTES};
use serde::Deserialize;

/// How long a peer may take to answer one request (a file of at most
/// [`MAX_ADAPTER_FILE_BYTES`] included).
const PEER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a peer may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The published adapters this node holds, and the peers it fetches missing ones from.
#[derive(Clone)]
pub struct Adapters {
    /// Adapters published to this node, or fetched from a peer.
    pub store: AdapterStore,
    peers: Vec<String>,
    http: reqwest::Client,
}

/// What a peer lists of an adapter (`GET /adapters/{hash}`).
#[derive(Deserialize)]
struct Listing {
    files: Vec<ListedFile>,
}

#[derive(Deserialize)]
struct ListedFile {
    name: String,
    size: u64,
}

impl Adapters {
    /// `store`, with `peers` (content API base URLs) to fetch from.
    pub fn new(store: AdapterStore, peers: Vec<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        let peers = peers
            .into_iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect();
        Ok(Self { store, peers, http })
    }

    /// The peers asked for adapters this node does not hold.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// Makes sure adapter `hash` is in the store, fetching it from the first peer that has it
    /// (kept as published by `creator`, the model's creator); whether it is there now. A peer
    /// that fails is logged and the next one asked.
    pub async fn ensure(&self, hash: B256, creator: Address) -> anyhow::Result<bool> {
        let store = self.store.clone();
        if tokio::task::spawn_blocking(move || store.get(hash))
            .await??
            .is_some()
        {
            return Ok(true);
        }
        for peer in &self.peers {
            match self.fetch_into_store(peer, hash, creator).await {
                Ok(true) => {
                    tracing::info!("fetched adapter {hash} from {peer}");
                    return Ok(true);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot fetch adapter {hash} from {peer}: {e:#}"),
            }
        }
        Ok(false)
    }

    /// Fetches adapter `hash` from `peer` into the store, which refuses weights that do not
    /// hash to it; whether the peer had it.
    async fn fetch_into_store(
        &self,
        peer: &str,
        hash: B256,
        creator: Address,
    ) -> anyhow::Result<bool> {
        let Some(files) = self.fetch(peer, hash).await? else {
            return Ok(false);
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put(hash, &files, creator)).await??;
        Ok(true)
    }

    /// Adapter `hash`'s files from `peer`, or `None` when it holds no such adapter. Sizes are
    /// checked against the listing and the store's limit before and while reading.
    async fn fetch(
        &self,
        peer: &str,
        hash: B256,
    ) -> anyhow::Result<Option<Vec<(String, Vec<u8>)>>> {
        let response = self
            .http
            .get(format!("{peer}/adapters/{hash}"))
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let listing: Listing = response.error_for_status()?.json().await?;
        let mut files = Vec::new();
        for file in listing.files {
            if !ADAPTER_FILES.contains(&file.name.as_str()) {
                continue;
            }
            if file.size > MAX_ADAPTER_FILE_BYTES {
                bail!("its {} is {} bytes, over the limit", file.name, file.size);
            }
            let url = format!("{peer}/adapters/{hash}/{}", file.name);
            let bytes = self.read(&url, file.size).await?;
            files.push((file.name, bytes));
        }
        Ok(Some(files))
    }

    /// The body at `url`, refused beyond `size` bytes.
    async fn read(&self, url: &str, size: u64) -> anyhow::Result<Vec<u8>> {
        let mut response = self.http.get(url).send().await?.error_for_status()?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = response.chunk().await.context("reading")? {
            if (bytes.len() + chunk.len()) as u64 > size {
                bail!("{url} sent more than the {size} bytes it listed");
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::keccak256;
    use axum::{Router, extract::Path, http::StatusCode, routing::get};

    use super::*;

    const WEIGHTS: &[u8] = b"the registered weights";

    /// A peer holding one adapter under `hash`, whose weights file is `weights`, listed as
    /// `listed` bytes long; its URL.
    async fn peer(hash: B256, weights: &'static [u8], listed: usize) -> String {
        let listing = move |Path(h): Path<String>| async move {
            if h != hash.to_string() {
                return Err(StatusCode::NOT_FOUND);
            }
            Ok(axum::Json(
                serde_json::json!({"adapterHash": hash, "files": [
                    {"name": "adapter_model.safetensors", "size": listed},
                    {"name": "adapter_config.json", "size": 2},
                ]}),
            ))
        };
        let file = move |Path((_, name)): Path<(String, String)>| async move {
            if name == "adapter_config.json" {
                b"{}".to_vec()
            } else {
                weights.to_vec()
            }
        };
        let app = Router::new()
            .route("/adapters/{hash}", get(listing))
            .route("/adapters/{hash}/{file}", get(file));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn adapters(dir: &std::path::Path, peers: Vec<String>) -> Adapters {
        Adapters::new(AdapterStore::open(dir).unwrap(), peers).unwrap()
    }

    #[tokio::test]
    async fn an_adapter_is_fetched_from_the_first_peer_that_holds_the_registered_weights() {
        let hash = keccak256(WEIGHTS);
        let creator = Address::repeat_byte(7);
        let dir = tempfile::tempdir().unwrap();
        let peers = vec![
            "http://127.0.0.1:1".to_string(),
            peer(B256::repeat_byte(1), WEIGHTS, WEIGHTS.len()).await,
            peer(hash, b"other weights!!", 15).await,
            peer(hash, WEIGHTS, 4).await,
            peer(hash, WEIGHTS, WEIGHTS.len()).await,
        ];
        // Unreachable, without it, substituting other weights, sending more than it listed:
        // each is passed over, and the last peer's copy is kept, as published by the creator.
        let found = adapters(dir.path(), peers);
        assert!(found.ensure(hash, creator).await.unwrap());
        let stored = found.store.get(hash).unwrap().expect("stored");
        assert_eq!(
            std::fs::read(stored.join("adapter_model.safetensors")).unwrap(),
            WEIGHTS
        );
        assert_eq!(found.store.publisher(hash).unwrap(), Some(creator));
        // Held now: no peer is asked again.
        assert!(
            adapters(dir.path(), Vec::new())
                .ensure(hash, creator)
                .await
                .unwrap()
        );

        let lying = tempfile::tempdir().unwrap();
        let only_liars = adapters(lying.path(), vec![peer(hash, b"other weights!!", 15).await]);
        assert!(!only_liars.ensure(hash, creator).await.unwrap());
        assert!(only_liars.store.get(hash).unwrap().is_none());
    }
}
