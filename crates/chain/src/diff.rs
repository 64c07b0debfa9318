//! What a block changed, as the store writes it: a leaf that both the state overlay (which
//! produces it) and the store (which writes it) depend on.

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_trie::TrieAccount;

/// What a block changed, ready to be written: new account records (with their new storage
/// roots), changed slots, wiped storages, new code and the trie nodes of the new state root.
#[derive(Debug, Default)]
pub struct StateDiff {
    /// The state root after the changes.
    pub state_root: B256,
    /// Changed accounts; `None` deletes the account.
    pub accounts: Vec<(Address, Option<TrieAccount>)>,
    /// Written storage slots (a zero value deletes the slot).
    pub storage: Vec<(Address, U256, U256)>,
    /// Accounts whose whole storage was cleared before `storage` applies.
    pub wiped: Vec<Address>,
    /// New contract code by hash.
    pub codes: Vec<(B256, Bytes)>,
    /// New trie nodes.
    pub nodes: Vec<(B256, Vec<u8>)>,
}
