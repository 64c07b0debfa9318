//! Where adapters come from and which stay in memory: a registry of the adapter directories under
//! one folder (thousands are cheap: a name and a path each) and a bounded LRU cache of the loaded
//! ones, limited both in adapters and in bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openledger_ml::LoraSet;
use openledger_ml::lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};

/// The adapters registered under a folder: each subdirectory holding a PEFT `adapter_config.json`
/// is one, and its name is the adapter's model id.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    root: PathBuf,
    adapters: BTreeMap<String, PathBuf>,
}

impl Registry {
    /// Scans `root` (which must exist).
    pub fn scan(root: &Path) -> std::io::Result<Self> {
        let mut registry = Self {
            root: root.to_path_buf(),
            adapters: BTreeMap::new(),
        };
        registry.rescan()?;
        Ok(registry)
    }

    /// Reads the folder again, picking up adapters added since (a fine-tune that just finished).
    pub fn rescan(&mut self) -> std::io::Result<()> {
        let mut adapters = BTreeMap::new();
        for entry in std::fs::read_dir(&self.root)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
            if let Some(name) = name.filter(|_| path.join(ADAPTER_CONFIG_FILE).is_file()) {
                adapters.insert(name, path);
            }
        }
        self.adapters = adapters;
        Ok(())
    }

    /// The directory of adapter `id`.
    pub fn get(&self, id: &str) -> Option<&Path> {
        self.adapters.get(id).map(PathBuf::as_path)
    }

    /// Registered ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.adapters.keys().map(String::as_str)
    }

    /// Number of registered adapters.
    pub fn len(&self) -> usize {
        self.adapters.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }
}

/// What tells one version of an adapter's weights file from another: a folder replaced whole (a
/// redeployed model's new adapter moved into place) or weights rewritten in place make a loaded
/// copy stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl Stamp {
    /// The stamp of the adapter in `dir`, if its weights file can be read.
    pub fn of(dir: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.join(ADAPTER_WEIGHTS_FILE)).ok()?;
        Some(Self {
            inode: meta.ino(),
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

/// Capacity of the [`AdapterCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most adapters held.
    pub adapters: usize,
    /// Most bytes of adapter weights held.
    pub bytes: usize,
}

/// Loaded adapters, least recently used evicted first when either limit would be passed.
///
/// Sequences running with an evicted adapter keep their own reference until they finish, so
/// eviction never disturbs a request in flight; memory beyond the limits is bounded by the batch.
#[derive(Debug)]
pub struct AdapterCache {
    limits: CacheLimits,
    entries: HashMap<String, (Arc<LoraSet>, u64)>,
    bytes: usize,
    clock: u64,
}

impl AdapterCache {
    /// An empty cache with `limits`.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            bytes: 0,
            clock: 0,
        }
    }

    /// The adapter `id` if loaded, marking it used.
    pub fn get(&mut self, id: &str) -> Option<Arc<LoraSet>> {
        self.clock += 1;
        let entry = self.entries.get_mut(id)?;
        entry.1 = self.clock;
        Some(entry.0.clone())
    }

    /// Adds a loaded adapter, evicting the least recently used ones to make room; returns how
    /// many were evicted. An adapter larger than the byte limit alone is not kept.
    pub fn insert(&mut self, id: &str, adapter: Arc<LoraSet>) -> usize {
        let size = adapter.size_bytes();
        if size > self.limits.bytes || self.limits.adapters == 0 {
            return 0;
        }
        self.remove(id);
        let mut evicted = 0;
        while self.entries.len() + 1 > self.limits.adapters || self.bytes + size > self.limits.bytes
        {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone())
                .expect("a cache over its limits is not empty");
            self.remove(&oldest);
            evicted += 1;
        }
        self.clock += 1;
        self.bytes += size;
        self.entries.insert(id.to_string(), (adapter, self.clock));
        evicted
    }

    /// Drops adapter `id` (its files changed); requests running with it keep their copy.
    pub fn remove(&mut self, id: &str) {
        if let Some((adapter, _)) = self.entries.remove(id) {
            self.bytes -= adapter.size_bytes();
        }
    }

    /// Adapters held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of adapter weights held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openledger_ml::{Adapter, Device, LoraConfig, ModelConfig};

    fn adapter(targets: &str) -> Arc<LoraSet> {
        let config = ModelConfig::llama(50, 32, 2, 4, 2);
        let lora = LoraConfig::new(4, 8.0, targets).unwrap();
        Arc::new(
            Adapter::init(&config, lora, 1, &Device::Cpu)
                .unwrap()
                .to_set()
                .unwrap(),
        )
    }

    #[test]
    fn the_least_recently_used_adapter_goes_first() {
        let one = adapter("q");
        let mut cache = AdapterCache::new(CacheLimits {
            adapters: 2,
            bytes: usize::MAX,
        });
        assert_eq!(cache.insert("a", one.clone()), 0);
        assert_eq!(cache.insert("b", one.clone()), 0);
        assert!(cache.get("a").is_some()); // b is now the least recently used
        assert_eq!(cache.insert("c", one.clone()), 1);
        assert!(cache.get("b").is_none());
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!((cache.len(), cache.bytes()), (2, 2 * one.size_bytes()));
    }

    #[test]
    fn the_byte_limit_holds_whatever_the_count() {
        let (small, large) = (adapter("q"), adapter("q,k,v,o,gate,up,down"));
        let limit = large.size_bytes() + small.size_bytes();
        let mut cache = AdapterCache::new(CacheLimits {
            adapters: 100,
            bytes: limit,
        });
        cache.insert("s1", small.clone());
        cache.insert("s2", small.clone());
        assert_eq!(
            cache.insert("l", large.clone()),
            1,
            "one small one makes room"
        );
        assert!(cache.bytes() <= limit);
        let mut tiny = AdapterCache::new(CacheLimits {
            adapters: 100,
            bytes: small.size_bytes(),
        });
        assert_eq!(tiny.insert("l", large), 0);
        assert!(
            tiny.is_empty(),
            "an adapter over the whole budget is not kept"
        );
    }

    #[test]
    fn the_registry_lists_adapter_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = ModelConfig::llama(50, 32, 2, 4, 2);
        let lora = LoraConfig::new(4, 8.0, "q").unwrap();
        let saved = Adapter::init(&config, lora, 1, &Device::Cpu).unwrap();
        saved.save(&dir.path().join("b-adapter"), "base").unwrap();
        std::fs::create_dir(dir.path().join("not-an-adapter")).unwrap();
        let mut registry = Registry::scan(dir.path()).unwrap();
        assert_eq!(registry.ids().collect::<Vec<_>>(), ["b-adapter"]);
        saved.save(&dir.path().join("a-adapter"), "base").unwrap();
        registry.rescan().unwrap();
        assert_eq!(
            registry.ids().collect::<Vec<_>>(),
            ["a-adapter", "b-adapter"]
        );
    }
}
