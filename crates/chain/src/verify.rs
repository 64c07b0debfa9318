//! Recomputes the state root from scratch and checks it against the head block, with a trie
//! implementation independent of the incremental one ([`alloy_trie::HashBuilder`]).
//!
//! This is what `openledger db verify` runs, and what the crash tests use to prove that a kill
//! at any moment leaves a consistent store.

use alloy_primitives::{B256, keccak256};
use alloy_trie::{HashBuilder, Nibbles, TrieAccount};

use crate::store::{StoreError, StoreReader};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The head block number.
    pub head: u64,
    /// The state root in the head header.
    pub stored_root: B256,
    /// The root recomputed from the current accounts and storage.
    pub computed_root: B256,
    /// Accounts whose stored storage root differs from the recomputed one.
    pub bad_storage_roots: Vec<alloy_primitives::Address>,
    /// Number of accounts.
    pub accounts: usize,
}

impl Verified {
    /// Whether the store is consistent.
    pub fn ok(&self) -> bool {
        self.stored_root == self.computed_root && self.bad_storage_roots.is_empty()
    }
}

/// Recomputes every storage root and the state root of the head block.
pub fn verify_state(reader: &StoreReader) -> Result<Verified, StoreError> {
    let head = reader
        .head()?
        .ok_or_else(|| StoreError::Corrupt("empty store".into()))?;
    let header = reader
        .header(head)?
        .ok_or_else(|| StoreError::Corrupt("head header missing".into()))?;
    let mut bad_storage_roots = Vec::new();
    let mut leaves: Vec<(B256, Vec<u8>)> = Vec::new();
    let accounts = reader.accounts()?;
    for (address, account) in &accounts {
        let slots = reader.storage_slots(address)?;
        let storage_root = root_of(slots.iter().map(|(slot, value)| {
            (
                keccak256(slot.to_be_bytes::<32>()),
                alloy_rlp::encode(value),
            )
        }));
        if storage_root != account.storage_root {
            bad_storage_roots.push(*address);
        }
        let account = TrieAccount {
            storage_root,
            ..*account
        };
        leaves.push((keccak256(address), alloy_rlp::encode(account)));
    }
    Ok(Verified {
        head,
        stored_root: header.state_root,
        computed_root: root_of(leaves),
        bad_storage_roots,
        accounts: accounts.len(),
    })
}

fn root_of(leaves: impl IntoIterator<Item = (B256, Vec<u8>)>) -> B256 {
    let mut leaves: Vec<_> = leaves.into_iter().collect();
    leaves.sort_unstable_by_key(|(key, _)| *key);
    let mut builder = HashBuilder::default();
    for (key, value) in &leaves {
        builder.add_leaf(Nibbles::unpack(key), value);
    }
    builder.root()
}
