//! The data directory: where the chain's store lives, guarded by a lock so that only one process
//! uses it at a time.

use std::{
    fs::{File, TryLockError},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// The default data directory for a network: `<user data dir>/openledger/<network>`.
pub fn default_datadir(network: &str) -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("openledger")
        .join(network)
}

/// An open data directory; the lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock, refusing if another process holds it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create data directory {}", path.display()))?;
        let lock_path = path.join("LOCK");
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot create lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => bail!(
                "data directory {} is in use by another openledger process (lock held on {}); \
                 stop it or choose another --datadir",
                path.display(),
                lock_path.display()
            ),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The chain store file.
    pub fn chain_db(&self) -> PathBuf {
        self.path.join("chain.redb")
    }

    /// The content store's directory (datanet files by content hash).
    pub fn content_dir(&self) -> PathBuf {
        self.path.join("content")
    }

    /// Published adapters, by the hash the chain registers for them.
    pub fn adapter_store_dir(&self) -> PathBuf {
        self.path.join("adapter-store")
    }

    /// The ledger of uploads not yet contributed.
    pub fn uploads_file(&self) -> PathBuf {
        self.path.join("uploads.json")
    }

    /// The span indexes of datanet versions, by which challenges are recomputed.
    pub fn attribution_dir(&self) -> PathBuf {
        self.path.join("attribution")
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use by another openledger process"),
            "{err}"
        );
        drop(first);
        DataDir::open(dir.path()).unwrap();
    }
}
