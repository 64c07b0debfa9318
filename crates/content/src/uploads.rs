//! Uploads stored but not yet contributed: who uploaded which content to which datanet, and when.
//!
//! An upload costs the node disk before any transaction pays for it, so it counts against the
//! uploader's and the datanet's daily quotas as soon as it is stored, and an upload nobody
//! contributes is collected after a while. Once the chain records a contribution of the content,
//! the upload leaves this ledger (the chain's own quota accounting takes over) and its content is
//! kept for good. The ledger is one JSON file, rewritten atomically on every change.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use alloy_primitives::{Address, B256, U256};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One stored upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    /// The content's hash.
    pub content_hash: B256,
    /// The account the upload was signed by.
    pub uploader: Address,
    /// The datanet it was uploaded to.
    pub datanet: U256,
    /// The file's size in bytes.
    pub size: u64,
    /// When it was stored (the chain's clock, seconds).
    pub stored_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ledger {
    pending: Vec<Upload>,
    /// Content hashes the chain has recorded contributions of: never collected.
    contributed: BTreeSet<B256>,
    /// Contributions of content their contributor uploaded here to that datanet: the chain takes
    /// any content hash, so only these say who a file belongs to.
    #[serde(default)]
    uploaded: BTreeSet<(B256, U256, Address)>,
    /// The newest block whose contributions are reflected here.
    last_block: u64,
}

/// The ledger of uploads not yet contributed; see the module documentation.
#[derive(Debug)]
pub struct PendingUploads {
    path: PathBuf,
    ledger: Mutex<Ledger>,
    gate: Mutex<()>,
}

impl PendingUploads {
    /// Opens the ledger kept in `path` (an empty one if the file does not exist).
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let ledger = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ledger::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            ledger: Mutex::new(ledger),
            gate: Mutex::new(()),
        })
    }

    /// A turn of its own for a step that reads the ledger, changes the content store and
    /// records that (check a quota, store, record; expire, delete), so that no other such step
    /// runs in between.
    pub fn exclusive(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.gate.lock()
    }

    /// Records a stored upload; the same content uploaded again by the same account to the same
    /// datanet is recorded once, as stored at its latest upload (its wait starts again).
    pub fn add(&self, upload: Upload) -> std::io::Result<()> {
        let mut ledger = self.ledger.lock();
        match ledger.pending.iter_mut().find(|p| same_upload(p, &upload)) {
            Some(earlier) => earlier.stored_at = earlier.stored_at.max(upload.stored_at),
            None => ledger.pending.push(upload),
        }
        save(&self.path, &ledger)
    }

    /// Bytes and files of the uploads stored at or after `since` that match `filter`.
    fn usage_since(&self, since: u64, filter: impl Fn(&Upload) -> bool) -> (u64, u64) {
        self.ledger
            .lock()
            .pending
            .iter()
            .filter(|p| p.stored_at >= since && filter(p))
            .fold((0, 0), |(bytes, files), p| (bytes + p.size, files + 1))
    }

    /// Bytes and files of the uploads to `datanet` stored at or after `since`.
    pub fn datanet_usage_since(&self, datanet: U256, since: u64) -> (u64, u64) {
        self.usage_since(since, |p| p.datanet == datanet)
    }

    /// Bytes and files of the uploads by `uploader` stored at or after `since`.
    pub fn uploader_usage_since(&self, uploader: Address, since: u64) -> (u64, u64) {
        self.usage_since(since, |p| p.uploader == uploader)
    }

    /// Takes note of a contribution the chain recorded in block `block`: the matching upload
    /// leaves the ledger and its content is kept.
    pub fn contributed(
        &self,
        content_hash: B256,
        contributor: Address,
        datanet: U256,
        block: u64,
    ) -> std::io::Result<()> {
        let mut ledger = self.ledger.lock();
        let before = ledger.pending.len();
        ledger.pending.retain(|p| {
            !(p.content_hash == content_hash && p.uploader == contributor && p.datanet == datanet)
        });
        if ledger.pending.len() < before {
            ledger.uploaded.insert((content_hash, datanet, contributor));
        }
        ledger.contributed.insert(content_hash);
        ledger.last_block = ledger.last_block.max(block);
        save(&self.path, &ledger)
    }

    /// Whether `contributor` uploaded `content_hash` here to `datanet` before contributing it:
    /// a contribution of a hash someone else uploaded says nothing of who may read the file.
    pub fn uploaded_by(&self, content_hash: B256, datanet: U256, contributor: Address) -> bool {
        self.ledger
            .lock()
            .uploaded
            .contains(&(content_hash, datanet, contributor))
    }

    /// Who uploaded `content_hash`, to which datanet, among the uploads not contributed yet.
    pub fn uploads_of(&self, content_hash: B256) -> Vec<(Address, U256)> {
        self.ledger
            .lock()
            .pending
            .iter()
            .filter(|p| p.content_hash == content_hash)
            .map(|p| (p.uploader, p.datanet))
            .collect()
    }

    /// The newest block whose contributions the ledger reflects.
    pub fn last_block(&self) -> u64 {
        self.ledger.lock().last_block
    }

    /// Notes that every block up to `block` has been looked at.
    pub fn seen_block(&self, block: u64) -> std::io::Result<()> {
        let mut ledger = self.ledger.lock();
        if block <= ledger.last_block {
            return Ok(());
        }
        ledger.last_block = block;
        save(&self.path, &ledger)
    }

    /// Drops the uploads stored before `before`; returns the content hashes that nothing needs
    /// any more (no upload left pending, no contribution), for the store to delete.
    pub fn expire(&self, before: u64) -> std::io::Result<Vec<B256>> {
        let mut ledger = self.ledger.lock();
        let (expired, kept): (Vec<Upload>, Vec<Upload>) =
            ledger.pending.drain(..).partition(|p| p.stored_at < before);
        ledger.pending = kept;
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let unused: BTreeSet<B256> = expired
            .iter()
            .map(|p| p.content_hash)
            .filter(|hash| {
                !ledger.contributed.contains(hash)
                    && !ledger.pending.iter().any(|p| p.content_hash == *hash)
            })
            .collect();
        save(&self.path, &ledger)?;
        Ok(unused.into_iter().collect())
    }
}

fn same_upload(a: &Upload, b: &Upload) -> bool {
    a.content_hash == b.content_hash && a.uploader == b.uploader && a.datanet == b.datanet
}

/// Writes the ledger aside and renames it into place, so a crash leaves the old or the new one.
fn save(path: &Path, ledger: &Ledger) -> std::io::Result<()> {
    let scratch = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(ledger).map_err(std::io::Error::other)?;
    fs::write(&scratch, bytes)?;
    fs::File::open(&scratch)?.sync_all()?;
    fs::rename(scratch, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(hash: u8, uploader: u8, datanet: u64, size: u64, stored_at: u64) -> Upload {
        Upload {
            content_hash: B256::repeat_byte(hash),
            uploader: Address::repeat_byte(uploader),
            datanet: U256::from(datanet),
            size,
            stored_at,
        }
    }

    #[test]
    fn uploads_count_until_contributed_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads.json");
        let ledger = PendingUploads::open(&path).unwrap();
        ledger.add(upload(1, 0xa, 1, 100, 50)).unwrap();
        ledger.add(upload(1, 0xa, 1, 100, 60)).unwrap();
        ledger.add(upload(2, 0xb, 1, 10, 70)).unwrap();
        ledger.add(upload(3, 0xa, 2, 5, 80)).unwrap();
        ledger.add(upload(4, 0xc, 3, 7, 10)).unwrap();
        let a = Address::repeat_byte(0xa);
        // The same upload twice counts once; one stored before `since` does not count.
        assert_eq!(ledger.datanet_usage_since(U256::from(1), 20), (110, 2));
        assert_eq!(ledger.uploader_usage_since(a, 20), (105, 2));
        assert_eq!(ledger.datanet_usage_since(U256::from(3), 20), (0, 0));
        assert_eq!(ledger.datanet_usage_since(U256::from(3), 0), (7, 1));

        ledger
            .contributed(B256::repeat_byte(1), a, U256::from(1), 9)
            .unwrap();
        let reopened = PendingUploads::open(&path).unwrap();
        assert_eq!(reopened.datanet_usage_since(U256::from(1), 20), (10, 1));
        assert_eq!(reopened.uploader_usage_since(a, 20), (5, 1));
        assert_eq!(reopened.last_block(), 9);
    }

    #[test]
    fn only_content_nothing_needs_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = PendingUploads::open(dir.path().join("uploads.json")).unwrap();
        ledger.add(upload(1, 0xa, 1, 1, 10)).unwrap();
        ledger.add(upload(2, 0xa, 1, 1, 10)).unwrap();
        ledger.add(upload(2, 0xb, 1, 1, 500)).unwrap();
        ledger.add(upload(3, 0xa, 1, 1, 10)).unwrap();
        ledger.add(upload(3, 0xb, 2, 1, 10)).unwrap();
        ledger
            .contributed(
                B256::repeat_byte(3),
                Address::repeat_byte(0xb),
                U256::from(2),
                1,
            )
            .unwrap();
        // 1: expired and unused. 2: still pending for b. 3: contributed by b, so kept.
        assert_eq!(ledger.expire(100).unwrap(), vec![B256::repeat_byte(1)]);
        assert_eq!(ledger.expire(100).unwrap(), Vec::<B256>::new());
        assert_eq!(ledger.expire(1_000).unwrap(), vec![B256::repeat_byte(2)]);
    }
}
