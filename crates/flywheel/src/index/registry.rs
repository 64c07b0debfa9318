//! The span indexes a node holds, one per datanet version, and the attribution oracle the
//! Settlement module recomputes challenged receipts with.
//!
//! The operator's answers and a challenge's recomputation go through the same
//! [`IndexRegistry::attribute`], so they agree by construction: the output is attributed as the
//! continuation of the prompt, both tokenized from their texts with the index's own tokenizer,
//! with the default span options.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use alloy_primitives::U256;
use anyhow::Context;
use openledger_attribution::{Attribution, ShardedIndex, SpanOptions};
use openledger_ml::tokenizer;
use openledger_protocol::settlement::challenge::AttributionOracle;

use super::{BuiltIndex, TOKENIZER_FILE, read_tokenizer};

/// An opened index with the tokenizer its rows were tokenized by.
struct Loaded {
    index: ShardedIndex,
    tokenizer: tokenizer::Tokenizer,
    fingerprint: String,
}

/// The span indexes under a directory, `datanet-<id>/v<version>/`, opened on first use.
pub struct IndexRegistry {
    dir: PathBuf,
    open: Mutex<HashMap<(U256, u64), Arc<Loaded>>>,
}

impl std::fmt::Debug for IndexRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexRegistry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl IndexRegistry {
    /// The registry of indexes under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: Mutex::default(),
        }
    }

    fn dir_of(&self, datanet: U256, version: u64) -> PathBuf {
        self.dir
            .join(format!("datanet-{datanet}"))
            .join(format!("v{version}"))
    }

    /// Saves `built` as the index of `datanet` at `version`, with a copy of the tokenizer at
    /// `tokenizer_path` it was built with.
    pub fn install(
        &self,
        datanet: U256,
        version: u64,
        built: &BuiltIndex,
        tokenizer_path: &Path,
    ) -> anyhow::Result<()> {
        let dir = self.dir_of(datanet, version);
        // Written aside and renamed, so that a crash never leaves a half index in place.
        let partial = dir.with_extension("partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("cannot clear {}", partial.display()))?;
        }
        built.index.save(&partial)?;
        std::fs::copy(tokenizer_path, partial.join(TOKENIZER_FILE))
            .with_context(|| format!("copy the tokenizer into {}", partial.display()))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        std::fs::rename(&partial, &dir)
            .with_context(|| format!("cannot move the index to {}", dir.display()))?;
        self.open
            .lock()
            .expect("registry lock")
            .remove(&(datanet, version));
        Ok(())
    }

    /// Whether this node holds the index of `datanet` at `version`.
    pub fn has(&self, datanet: U256, version: u64) -> bool {
        self.dir_of(datanet, version).is_dir()
    }

    fn load(&self, datanet: U256, version: u64) -> anyhow::Result<Arc<Loaded>> {
        if let Some(loaded) = self
            .open
            .lock()
            .expect("registry lock")
            .get(&(datanet, version))
        {
            return Ok(loaded.clone());
        }
        let dir = self.dir_of(datanet, version);
        if !dir.is_dir() {
            anyhow::bail!("no span index of datanet {datanet} version {version} on this node");
        }
        let index = ShardedIndex::open(&dir)?;
        let (tokenizer, fingerprint) = read_tokenizer(&dir.join(TOKENIZER_FILE))?;
        let loaded = Arc::new(Loaded {
            index,
            tokenizer,
            fingerprint,
        });
        self.open
            .lock()
            .expect("registry lock")
            .insert((datanet, version), loaded.clone());
        Ok(loaded)
    }

    /// The span attribution of `output`, the continuation of `prompt`, over `datanet` at
    /// `version`.
    pub fn attribute(
        &self,
        datanet: U256,
        version: u64,
        prompt: &str,
        output: &str,
    ) -> anyhow::Result<(Attribution, Vec<u32>)> {
        let loaded = self.load(datanet, version)?;
        let context = tokenizer::encode(&loaded.tokenizer, prompt)?;
        let answer = tokenizer::encode(&loaded.tokenizer, output)?;
        let attribution = loaded.index.attribute_continuation(
            &context,
            &answer,
            &loaded.fingerprint,
            &SpanOptions::default(),
        )?;
        Ok((attribution, [context, answer].concat()))
    }

    /// The text of `tokens`, decoded with the tokenizer of the index of `datanet` at `version`.
    pub fn decode(&self, datanet: U256, version: u64, tokens: &[u32]) -> anyhow::Result<String> {
        Ok(tokenizer::decode(
            &self.load(datanet, version)?.tokenizer,
            tokens,
        )?)
    }
}

impl AttributionOracle for IndexRegistry {
    fn span_weights(
        &self,
        datanet: U256,
        version: u64,
        prompt: &str,
        output: &str,
    ) -> Result<Vec<(U256, u32)>, String> {
        let (attribution, _) = self
            .attribute(datanet, version, prompt, output)
            .map_err(|e| format!("{e:#}"))?;
        attribution
            .weights
            .iter()
            .map(|c| {
                let id = c.contribution.parse::<U256>().map_err(|_| {
                    format!(
                        "the index credits {:?}, not a contribution id",
                        c.contribution
                    )
                })?;
                Ok((id, c.ppm))
            })
            .collect()
    }
}
