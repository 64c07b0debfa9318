//! Trained adapters by the hash the chain registers for them (`IModels.registerArtifact`'s
//! `adapterHash`: the keccak-256 of the weights file), so that a node serves a deployed model
//! whichever machine or folder it was trained in: the creator publishes the adapter's files
//! once registered, and a node that serves the model installs them from here.
//!
//! Each adapter is `<dir>/<hash>/` holding the files of a PEFT adapter folder that a node needs:
//! the weights, the PEFT config, the training metrics and the gradient sketches that gradient
//! attribution reads, with the account that published it (`publisher`): only that account
//! replaces them, since another model may register the same weights. An adapter is written to a
//! scratch folder and renamed into place, so a reader never sees half of one.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use alloy_primitives::{Address, B256, keccak256};

use crate::ContentError;

/// The weights file, whose hash names the adapter.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The PEFT configuration.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The training metrics (their hash is registered beside the adapter's).
pub const METRICS_FILE: &str = "metrics.json";
/// The gradient sketches of the training rows (`openledger_attribution::INFLUENCE_FILE`), without
/// which a node attributes the adapter's completions by span only.
pub const INFLUENCE_FILE: &str = "influence.bin";
/// The files an adapter is published with: the first two (weights, config) are required.
pub const ADAPTER_FILES: [&str; 4] = [WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, INFLUENCE_FILE];
/// Who published an adapter.
const PUBLISHER_FILE: &str = "publisher";
/// The largest adapter file accepted: a rank-16 LoRA of every projection of a 135M-parameter
/// model is ~20 MB in 32-bit floats.
pub const MAX_ADAPTER_FILE_BYTES: u64 = 64 << 20;

/// Published adapters, by weights hash.
#[derive(Debug, Clone)]
pub struct AdapterStore {
    dir: PathBuf,
}

impl AdapterStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ContentError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Stores an adapter's files (name and bytes; only [`ADAPTER_FILES`] are taken) under the
    /// hash of its weights, which must be `expected`, as published by `publisher`; the same
    /// publisher storing it again replaces its other files, anyone else is refused.
    pub fn put(
        &self,
        expected: B256,
        files: &[(String, Vec<u8>)],
        publisher: Address,
    ) -> Result<(), ContentError> {
        let file = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        for name in [WEIGHTS_FILE, CONFIG_FILE] {
            if file(name).is_none() {
                return Err(ContentError::Invalid(format!(
                    "an adapter needs its {name}"
                )));
            }
        }
        if let Some((_, bytes)) = files
            .iter()
            .find(|(_, bytes)| bytes.len() as u64 > MAX_ADAPTER_FILE_BYTES)
        {
            return Err(ContentError::TooLarge {
                size: bytes.len() as u64,
                max: MAX_ADAPTER_FILE_BYTES,
            });
        }
        let hash = keccak256(file(WEIGHTS_FILE).expect("checked"));
        if hash != expected {
            return Err(ContentError::Invalid(format!(
                "the weights hash to {hash}, not to the registered adapterHash {expected}"
            )));
        }
        if let Some(owner) = self.publisher(hash)?
            && owner != publisher
        {
            return Err(ContentError::Taken(hash, owner));
        }
        let scratch = scratch_dir(&self.dir, hash)?;
        for name in ADAPTER_FILES {
            if let Some(bytes) = file(name) {
                fs::write(scratch.join(name), bytes)?;
            }
        }
        fs::write(scratch.join(PUBLISHER_FILE), publisher.to_string())?;
        replace_dir(&scratch, &self.path(hash), hash)
    }

    /// Who published adapter `hash`, if it is stored.
    pub fn publisher(&self, hash: B256) -> Result<Option<Address>, ContentError> {
        match fs::read_to_string(self.path(hash).join(PUBLISHER_FILE)) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ContentError::Corrupt(hash, format!("publisher: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The folder of adapter `hash`, if it is stored and its weights still hash to it.
    pub fn get(&self, hash: B256) -> Result<Option<PathBuf>, ContentError> {
        let dir = self.path(hash);
        let weights = match fs::read(dir.join(WEIGHTS_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if keccak256(&weights) != hash {
            return Err(ContentError::Corrupt(hash, "the weights changed".into()));
        }
        Ok(Some(dir))
    }

    /// The files adapter `hash` is stored with, with their sizes.
    pub fn files(&self, hash: B256) -> Result<Vec<(&'static str, u64)>, ContentError> {
        let dir = self.get(hash)?.ok_or(ContentError::NotFound(hash))?;
        let mut files = Vec::new();
        for name in ADAPTER_FILES {
            if let Ok(meta) = fs::metadata(dir.join(name)) {
                files.push((name, meta.len()));
            }
        }
        Ok(files)
    }

    /// Copies adapter `hash` into `target` (replacing what is there) through a scratch folder
    /// beside it, so that `target` is never half written; whether it was stored.
    pub fn install(&self, hash: B256, target: &Path) -> Result<bool, ContentError> {
        let Some(dir) = self.get(hash)? else {
            return Ok(false);
        };
        let parent = target
            .parent()
            .ok_or_else(|| ContentError::Invalid("the target has no parent folder".into()))?;
        fs::create_dir_all(parent)?;
        let scratch = scratch_dir(parent, hash)?;
        for name in ADAPTER_FILES {
            let from = dir.join(name);
            if from.is_file() {
                fs::copy(&from, scratch.join(name))?;
            }
        }
        replace_dir(&scratch, target, hash)?;
        Ok(true)
    }

    fn path(&self, hash: B256) -> PathBuf {
        self.dir.join(hash.to_string())
    }
}

/// A scratch folder of its own in `parent`: two requests may write the same adapter at once.
fn scratch_dir(parent: &Path, hash: B256) -> Result<PathBuf, ContentError> {
    static SCRATCHES: AtomicU64 = AtomicU64::new(0);
    let n = SCRATCHES.fetch_add(1, Ordering::Relaxed);
    let scratch = parent.join(format!(".incoming-{hash}-{}-{n}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    Ok(scratch)
}

/// Puts `scratch` in `target`'s place, whole; if a concurrent writer of the same adapter got
/// there first, its copy stands.
fn replace_dir(scratch: &Path, target: &Path, hash: B256) -> Result<(), ContentError> {
    let _ = fs::remove_dir_all(target);
    if let Err(e) = fs::rename(scratch, target) {
        let _ = fs::remove_dir_all(scratch);
        let there = fs::read(target.join(WEIGHTS_FILE)).map(keccak256);
        if there.ok() != Some(hash) {
            return Err(e.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(weights: &[u8]) -> Vec<(String, Vec<u8>)> {
        vec![
            (WEIGHTS_FILE.into(), weights.to_vec()),
            (CONFIG_FILE.into(), b"{\"r\": 4}".to_vec()),
            ("notes.txt".into(), b"not an adapter file".to_vec()),
        ]
    }

    #[test]
    fn an_adapter_is_stored_by_its_weights_hash_and_installed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let store = AdapterStore::open(tmp.path().join("adapters")).unwrap();
        let hash = keccak256(b"weights");
        let creator = Address::repeat_byte(1);
        assert_eq!(store.get(hash).unwrap(), None);
        store.put(hash, &adapter(b"weights"), creator).unwrap();
        store.put(hash, &adapter(b"weights"), creator).unwrap();
        assert_eq!(store.publisher(hash).unwrap(), Some(creator));
        // Another model registering the same weights cannot replace the files.
        let err = store
            .put(hash, &adapter(b"weights"), Address::repeat_byte(2))
            .unwrap_err();
        assert!(
            matches!(err, ContentError::Taken(_, owner) if owner == creator),
            "{err}"
        );
        assert_eq!(
            store.files(hash).unwrap(),
            vec![(WEIGHTS_FILE, 7), (CONFIG_FILE, 8)]
        );
        let served = tmp.path().join("served").join("model-3");
        std::fs::create_dir_all(&served).unwrap();
        std::fs::write(served.join(WEIGHTS_FILE), b"stale").unwrap();
        assert!(store.install(hash, &served).unwrap());
        assert_eq!(
            std::fs::read(served.join(WEIGHTS_FILE)).unwrap(),
            b"weights"
        );
        assert!(!served.join("notes.txt").exists());
        assert!(!store.install(keccak256(b"other"), &served).unwrap());
    }

    #[test]
    fn an_adapter_whose_weights_are_not_the_registered_ones_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = AdapterStore::open(tmp.path()).unwrap();
        let registered = keccak256(b"weights");
        let creator = Address::repeat_byte(1);
        let err = store
            .put(registered, &adapter(b"tampered"), creator)
            .unwrap_err();
        assert!(err.to_string().contains("not to the registered"), "{err}");
        let err = store
            .put(registered, &adapter(b"weights")[..1], creator)
            .unwrap_err();
        assert!(err.to_string().contains(CONFIG_FILE), "{err}");
        assert_eq!(store.get(registered).unwrap(), None);
        // A stored adapter whose weights change on disk is reported, not served.
        store
            .put(registered, &adapter(b"weights"), creator)
            .unwrap();
        std::fs::write(
            tmp.path().join(registered.to_string()).join(WEIGHTS_FILE),
            b"x",
        )
        .unwrap();
        assert!(matches!(
            store.get(registered),
            Err(ContentError::Corrupt(..))
        ));
    }
}
