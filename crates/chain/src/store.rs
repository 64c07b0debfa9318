//! The chain's durable store: blocks, receipts, indexes, state, state history and trie nodes, in
//! one redb file.
//!
//! Every block is written in a single redb write transaction committed with immediate durability,
//! so a crash at any point leaves the store at the last fully committed block. Readers work on
//! snapshots ([`StoreReader`]) and never block the writer.
//!
//! State is kept twice: the current values (fast reads for execution) and a history of the value
//! each account and slot took at every block that changed it, so queries at any past block are
//! answered exactly. All history is kept (no pruning); see the README for the disk cost.

use std::path::Path;

use alloy_consensus::Header;
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};
use alloy_trie::TrieAccount;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

pub use crate::error::StoreError;
use crate::{
    diff::StateDiff,
    trie::{NodeReader, TrieError},
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
const BLOCK_NUMBERS: TableDefinition<&[u8], u64> = TableDefinition::new("block_numbers");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");
const TX_INDEX: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("tx_index");
const ACCOUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accounts");
const STORAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("storage");
const CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("code");
const ACCOUNT_HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("account_history");
const STORAGE_HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("storage_history");
const TRIE_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trie_nodes");

const META_HEAD: &str = "head";
const META_CHAIN: &str = "chain";

/// The transactions of a block as stored: EIP-2718 encodings and their recovered senders.
#[derive(Debug, Clone, Default, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct StoredBody {
    /// EIP-2718 encoded transactions.
    pub transactions: Vec<Bytes>,
    /// The sender of each transaction.
    pub senders: Vec<Address>,
}

/// Everything a block adds to the store.
#[derive(Debug)]
pub struct BlockWrite<'a> {
    /// The sealed header.
    pub header: &'a Header,
    /// The header's hash.
    pub hash: B256,
    /// The transactions.
    pub body: &'a StoredBody,
    /// Hashes of the transactions, in order.
    pub tx_hashes: &'a [B256],
    /// EIP-2718 encoded receipts, in order.
    pub receipts: &'a [Bytes],
    /// The state changes and trie nodes.
    pub diff: &'a StateDiff,
}

/// The durable store of one chain.
pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(256 << 20).create(path)?;
        Self::init(db)
    }

    /// A store in memory, for tests and the state-test harness.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(META)?;
        for table in [HEADERS, BODIES, RECEIPTS] {
            txn.open_table(table)?;
        }
        for table in [
            ACCOUNTS,
            STORAGE,
            CODE,
            ACCOUNT_HISTORY,
            STORAGE_HISTORY,
            TRIE_NODES,
        ] {
            txn.open_table(table)?;
        }
        txn.open_table(BLOCK_NUMBERS)?;
        txn.open_table(TX_INDEX)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// A consistent snapshot for reading.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        Ok(StoreReader {
            txn: self.db.begin_read()?,
        })
    }

    /// Records the chain identity (genesis hash and chain id) of a new store, or checks that an
    /// existing store belongs to the same chain.
    pub fn check_chain(&self, identity: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let existing = meta.get(META_CHAIN)?.map(|v| v.value().to_vec());
            match existing {
                Some(stored) if stored != identity => {
                    return Err(StoreError::Mismatch(
                        "the data directory holds a different chain (genesis differs); use another --datadir".into(),
                    ));
                }
                Some(_) => {}
                None => {
                    meta.insert(META_CHAIN, identity)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Writes a block, its receipts and its state changes atomically and durably: when this
    /// returns, the block survives a crash.
    pub fn write_block(&self, block: BlockWrite<'_>) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let number = block.header.number;
        write_chain_data(&txn, &block)?;
        write_state(&txn, number, block.diff)?;
        txn.open_table(META)?
            .insert(META_HEAD, number.to_be_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

impl Store {
    /// Removes every block after `number` and what they changed, durably in one commit: blocks,
    /// receipts, indexes, state and its history are as they were when `number` was the head (a
    /// dev chain's `evm_revert`). Trie nodes stay: they are addressed by hash, and the state
    /// roots of the blocks kept need them.
    pub fn unwind_to(&self, number: u64) -> Result<(), StoreError> {
        let head = self.reader()?.head()?.unwrap_or_default();
        if number >= head {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        for block in number + 1..=head {
            remove_chain_data(&txn, block)?;
        }
        unwind_history(&txn, ACCOUNTS, ACCOUNT_HISTORY, number)?;
        unwind_history(&txn, STORAGE, STORAGE_HISTORY, number)?;
        txn.open_table(META)?
            .insert(META_HEAD, number.to_be_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

/// Removes block `number`'s header, body, receipts and index entries.
fn remove_chain_data(txn: &WriteTransaction, number: u64) -> Result<(), StoreError> {
    if let Some(header) = txn.open_table(HEADERS)?.remove(number)? {
        let hash = Header::decode(&mut header.value())?.hash_slow();
        txn.open_table(BLOCK_NUMBERS)?.remove(hash.as_slice())?;
    }
    if let Some(body) = txn.open_table(BODIES)?.remove(number)? {
        let body = StoredBody::decode(&mut body.value())?;
        let mut index = txn.open_table(TX_INDEX)?;
        for tx in &body.transactions {
            index.remove(keccak256(tx).as_slice())?;
        }
    }
    txn.open_table(RECEIPTS)?.remove(number)?;
    Ok(())
}

/// Drops the `history` entries written after block `number` and puts back in `current` the value
/// each key they touched had at `number` (absent when it had none).
fn unwind_history(
    txn: &WriteTransaction,
    current: TableDefinition<&[u8], &[u8]>,
    history: TableDefinition<&[u8], &[u8]>,
    number: u64,
) -> Result<(), StoreError> {
    let mut history = txn.open_table(history)?;
    let mut later = Vec::new();
    for entry in history.iter()? {
        let key = entry?.0.value().to_vec();
        let (_, written) = key.split_at(key.len() - 8);
        if u64::from_be_bytes(written.try_into().expect("8 bytes")) > number {
            later.push(key);
        }
    }
    let mut touched = std::collections::BTreeSet::new();
    for key in later {
        history.remove(key.as_slice())?;
        touched.insert(key[..key.len() - 8].to_vec());
    }
    let mut current = txn.open_table(current)?;
    for key in touched {
        match last_at_or_before(&history, &key, number)? {
            // Deleted accounts are written as empty records, cleared slots as zero words.
            Some(value) if value.iter().any(|b| *b != 0) => {
                current.insert(key.as_slice(), value.as_slice())?;
            }
            _ => {
                current.remove(key.as_slice())?;
            }
        }
    }
    Ok(())
}

fn write_chain_data(txn: &WriteTransaction, block: &BlockWrite<'_>) -> Result<(), StoreError> {
    let number = block.header.number;
    txn.open_table(HEADERS)?
        .insert(number, alloy_rlp::encode(block.header).as_slice())?;
    txn.open_table(BLOCK_NUMBERS)?
        .insert(block.hash.as_slice(), number)?;
    txn.open_table(BODIES)?
        .insert(number, alloy_rlp::encode(block.body).as_slice())?;
    let mut receipts = Vec::new();
    alloy_rlp::encode_list::<Bytes, Bytes>(block.receipts, &mut receipts);
    txn.open_table(RECEIPTS)?
        .insert(number, receipts.as_slice())?;
    let mut index = txn.open_table(TX_INDEX)?;
    for (i, hash) in sorted(block.tx_hashes.iter().enumerate(), |(_, h)| **h) {
        index.insert(hash.as_slice(), (number, i as u32))?;
    }
    Ok(())
}

fn write_state(txn: &WriteTransaction, number: u64, diff: &StateDiff) -> Result<(), StoreError> {
    let mut accounts = txn.open_table(ACCOUNTS)?;
    let mut account_history = txn.open_table(ACCOUNT_HISTORY)?;
    let mut storage = txn.open_table(STORAGE)?;
    let mut storage_history = txn.open_table(STORAGE_HISTORY)?;
    for address in &diff.wiped {
        let (first, last) = slot_range(address);
        let slots: Vec<Vec<u8>> = storage
            .range(first.as_slice()..=last.as_slice())?
            .map(|entry| entry.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for key in slots {
            storage.remove(key.as_slice())?;
            storage_history.insert(history_key(&key, number).as_slice(), [0u8; 32].as_slice())?;
        }
    }
    for (address, account) in sorted(&diff.accounts, |(a, _)| *a) {
        let key = history_key(address.as_slice(), number);
        match account {
            Some(account) => {
                let rlp = alloy_rlp::encode(account);
                accounts.insert(address.as_slice(), rlp.as_slice())?;
                account_history.insert(key.as_slice(), rlp.as_slice())?;
            }
            None => {
                accounts.remove(address.as_slice())?;
                account_history.insert(key.as_slice(), [].as_slice())?;
            }
        }
    }
    for (address, slot, value) in sorted(&diff.storage, |(a, s, _)| (*a, *s)) {
        let key = slot_key(address, slot);
        let bytes = value.to_be_bytes::<32>();
        if value.is_zero() {
            storage.remove(key.as_slice())?;
        } else {
            storage.insert(key.as_slice(), bytes.as_slice())?;
        }
        storage_history.insert(history_key(&key, number).as_slice(), bytes.as_slice())?;
    }
    let mut code = txn.open_table(CODE)?;
    for (hash, bytes) in &diff.codes {
        code.insert(hash.as_slice(), bytes.as_ref())?;
    }
    let mut nodes = txn.open_table(TRIE_NODES)?;
    for (hash, rlp) in sorted(&diff.nodes, |(h, _)| *h) {
        nodes.insert(hash.as_slice(), rlp.as_slice())?;
    }
    Ok(())
}

/// `items` in key order. Inserting a block's hash-keyed rows (trie nodes, transaction hashes) in
/// key order walks each B-tree once from left to right instead of jumping between random pages.
fn sorted<T, K: Ord>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort_unstable_by_key(key);
    items
}

fn slot_key(address: &Address, slot: &U256) -> Vec<u8> {
    let mut key = Vec::with_capacity(52);
    key.extend_from_slice(address.as_slice());
    key.extend_from_slice(&slot.to_be_bytes::<32>());
    key
}

/// The first and last storage keys of `address` (both inclusive): every slot, `0xff…` included.
fn slot_range(address: &Address) -> (Vec<u8>, Vec<u8>) {
    (
        slot_key(address, &U256::ZERO),
        slot_key(address, &U256::MAX),
    )
}

fn history_key(prefix: &[u8], number: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// A read-only snapshot of the store.
pub struct StoreReader {
    txn: ReadTransaction,
}

impl StoreReader {
    /// The number of the last committed block, if any.
    pub fn head(&self) -> Result<Option<u64>, StoreError> {
        let meta = self.txn.open_table(META)?;
        let head = meta.get(META_HEAD)?;
        head.map(|v| {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("head pointer".into()))?;
            Ok(u64::from_be_bytes(bytes))
        })
        .transpose()
    }

    /// The header of block `number`.
    pub fn header(&self, number: u64) -> Result<Option<Header>, StoreError> {
        let table = self.txn.open_table(HEADERS)?;
        let value = table.get(number)?;
        value
            .map(|v| Ok(Header::decode(&mut v.value())?))
            .transpose()
    }

    /// The number of the block with this hash.
    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>, StoreError> {
        let table = self.txn.open_table(BLOCK_NUMBERS)?;
        Ok(table.get(hash.as_slice())?.map(|v| v.value()))
    }

    /// The transactions of block `number`.
    pub fn body(&self, number: u64) -> Result<Option<StoredBody>, StoreError> {
        let table = self.txn.open_table(BODIES)?;
        let value = table.get(number)?;
        value
            .map(|v| Ok(StoredBody::decode(&mut v.value())?))
            .transpose()
    }

    /// The EIP-2718 encoded receipts of block `number`.
    pub fn receipts(&self, number: u64) -> Result<Option<Vec<Bytes>>, StoreError> {
        let table = self.txn.open_table(RECEIPTS)?;
        let value = table.get(number)?;
        value
            .map(|v| Ok(Vec::<Bytes>::decode(&mut v.value())?))
            .transpose()
    }

    /// Where a transaction was included: block number and index.
    pub fn tx_location(&self, hash: &B256) -> Result<Option<(u64, u32)>, StoreError> {
        let table = self.txn.open_table(TX_INDEX)?;
        Ok(table.get(hash.as_slice())?.map(|v| v.value()))
    }

    /// The current (latest) state of an account.
    pub fn account(&self, address: &Address) -> Result<Option<TrieAccount>, StoreError> {
        let table = self.txn.open_table(ACCOUNTS)?;
        let value = table.get(address.as_slice())?;
        value
            .map(|v| Ok(TrieAccount::decode(&mut v.value())?))
            .transpose()
    }

    /// The current value of a storage slot.
    pub fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StoreError> {
        let table = self.txn.open_table(STORAGE)?;
        let value = table.get(slot_key(address, slot).as_slice())?;
        Ok(value
            .map(|v| U256::from_be_slice(v.value()))
            .unwrap_or_default())
    }

    /// The account as it was after block `number`.
    pub fn account_at(
        &self,
        address: &Address,
        number: u64,
    ) -> Result<Option<TrieAccount>, StoreError> {
        let table = self.txn.open_table(ACCOUNT_HISTORY)?;
        match last_at_or_before(&table, address.as_slice(), number)? {
            Some(bytes) if !bytes.is_empty() => {
                Ok(Some(TrieAccount::decode(&mut bytes.as_slice())?))
            }
            _ => Ok(None),
        }
    }

    /// The storage slot as it was after block `number`.
    pub fn storage_at(
        &self,
        address: &Address,
        slot: &U256,
        number: u64,
    ) -> Result<U256, StoreError> {
        let table = self.txn.open_table(STORAGE_HISTORY)?;
        let value = last_at_or_before(&table, &slot_key(address, slot), number)?;
        Ok(value.map(|v| U256::from_be_slice(&v)).unwrap_or_default())
    }

    /// Contract code by hash.
    pub fn code(&self, hash: &B256) -> Result<Option<Bytes>, StoreError> {
        let table = self.txn.open_table(CODE)?;
        Ok(table
            .get(hash.as_slice())?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }
}

impl StoreReader {
    /// Every current account, in address order.
    pub fn accounts(&self) -> Result<Vec<(Address, TrieAccount)>, StoreError> {
        let table = self.txn.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let account = TrieAccount::decode(&mut value.value())?;
            out.push((Address::from_slice(key.value()), account));
        }
        Ok(out)
    }

    /// Every non-zero current storage slot of `address`.
    pub fn storage_slots(&self, address: &Address) -> Result<Vec<(U256, U256)>, StoreError> {
        let table = self.txn.open_table(STORAGE)?;
        let (first, last) = slot_range(address);
        let mut out = Vec::new();
        for entry in table.range(first.as_slice()..=last.as_slice())? {
            let (key, value) = entry?;
            let slot = U256::from_be_slice(&key.value()[20..]);
            out.push((slot, U256::from_be_slice(value.value())));
        }
        Ok(out)
    }
}

/// The newest history entry of `prefix` written at or before block `number`.
fn last_at_or_before(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    number: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let start = history_key(prefix, 0);
    let end = history_key(prefix, number);
    let mut range = table.range(start.as_slice()..=end.as_slice())?;
    match range.next_back() {
        Some(entry) => Ok(Some(entry?.1.value().to_vec())),
        None => Ok(None),
    }
}

impl NodeReader for StoreReader {
    fn node(&self, hash: &B256) -> Result<Option<Vec<u8>>, TrieError> {
        let table = self.txn.open_table(TRIE_NODES).map_err(StoreError::from)?;
        let value = table.get(hash.as_slice()).map_err(StoreError::from)?;
        Ok(value.map(|v| v.value().to_vec()))
    }
}

/// Encodes a value for [`Store::check_chain`].
pub fn chain_identity(genesis_hash: B256, chain_id: u64) -> Vec<u8> {
    let mut out = genesis_hash.to_vec();
    chain_id.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(store: &Store, number: u64, diff: StateDiff) {
        let header = Header {
            number,
            ..Default::default()
        };
        store
            .write_block(BlockWrite {
                header: &header,
                hash: B256::with_last_byte(number as u8),
                body: &StoredBody::default(),
                tx_hashes: &[],
                receipts: &[],
                diff: &diff,
            })
            .unwrap();
    }

    /// Slots whose first byte is 0xff are an account's like any other: listed by
    /// `storage_slots` (which `db verify` checks the storage root with) and cleared by a wipe.
    #[test]
    fn slots_starting_with_0xff_are_listed_and_wiped() {
        let store = Store::in_memory().unwrap();
        let (a, next) = (Address::with_last_byte(1), Address::with_last_byte(2));
        let high = U256::MAX - U256::from(7);
        let slots = [U256::from(1), high, U256::MAX];
        let mut storage: Vec<_> = slots.iter().map(|s| (a, *s, U256::from(9))).collect();
        storage.push((next, U256::ZERO, U256::from(5)));
        write(
            &store,
            0,
            StateDiff {
                storage,
                ..Default::default()
            },
        );
        let listed: Vec<U256> = store
            .reader()
            .unwrap()
            .storage_slots(&a)
            .unwrap()
            .into_iter()
            .map(|(slot, _)| slot)
            .collect();
        assert_eq!(listed, slots);

        write(
            &store,
            1,
            StateDiff {
                wiped: vec![a],
                ..Default::default()
            },
        );
        let reader = store.reader().unwrap();
        assert_eq!(reader.storage_slots(&a).unwrap(), Vec::new());
        assert_eq!(reader.storage(&a, &high).unwrap(), U256::ZERO);
        assert_eq!(
            reader.storage_slots(&next).unwrap(),
            vec![(U256::ZERO, U256::from(5))]
        );
    }
}
