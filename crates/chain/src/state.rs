//! World state as the EVM sees it: a read view of committed state, an in-memory overlay of what a
//! block (or a call) changes, and the reduction of that overlay to a [`StateDiff`] with the new
//! state root.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256, Bytes, U256, keccak256, map::HashMap};
use alloy_trie::{EMPTY_ROOT_HASH, KECCAK_EMPTY, TrieAccount};
use revm::{
    Database, DatabaseCommit, DatabaseRef,
    bytecode::Bytecode,
    database_interface::DBErrorMarker,
    primitives::AddressMap,
    state::{Account, AccountInfo},
};

use crate::{
    diff::StateDiff,
    store::{StoreError, StoreReader},
    trie::{NodeReader, Trie, TrieError},
};

impl DBErrorMarker for StoreError {}

/// Read access to committed state at one block.
pub trait StateReader {
    /// The account, if it exists.
    fn account(&self, address: &Address) -> Result<Option<TrieAccount>, StoreError>;
    /// A storage slot (zero if never written).
    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StoreError>;
    /// Contract code by hash.
    fn code(&self, hash: &B256) -> Result<Option<Bytes>, StoreError>;
    /// The hash of a past block, for the `BLOCKHASH` opcode.
    fn block_hash(&self, number: u64) -> Result<B256, StoreError>;
}

/// The state after block `number`, read from a store snapshot. For the head block it reads the
/// current tables; for older blocks, the history tables.
pub struct StateAt<'a> {
    reader: &'a StoreReader,
    number: u64,
    latest: bool,
}

impl<'a> StateAt<'a> {
    /// The state after block `number`; `head` is the newest block in the snapshot.
    pub fn new(reader: &'a StoreReader, number: u64, head: u64) -> Self {
        Self {
            reader,
            number,
            latest: number >= head,
        }
    }

    /// The snapshot this view reads.
    pub fn reader(&self) -> &'a StoreReader {
        self.reader
    }
}

impl StateReader for StateAt<'_> {
    fn account(&self, address: &Address) -> Result<Option<TrieAccount>, StoreError> {
        if self.latest {
            self.reader.account(address)
        } else {
            self.reader.account_at(address, self.number)
        }
    }

    fn storage(&self, address: &Address, slot: &U256) -> Result<U256, StoreError> {
        if self.latest {
            self.reader.storage(address, slot)
        } else {
            self.reader.storage_at(address, slot, self.number)
        }
    }

    fn code(&self, hash: &B256) -> Result<Option<Bytes>, StoreError> {
        self.reader.code(hash)
    }

    fn block_hash(&self, number: u64) -> Result<B256, StoreError> {
        Ok(self
            .reader
            .header(number)?
            .map(|h| h.hash_slow())
            .unwrap_or_default())
    }
}

/// A change of state made outside any transaction, as dev tools make them (`anvil_setBalance`
/// and its kin): the rest of the account stays as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEdit {
    /// Sets the balance.
    Balance(Address, U256),
    /// Sets the nonce.
    Nonce(Address, u64),
    /// Sets the code (empty removes it).
    Code(Address, Bytes),
    /// Sets one storage slot.
    Storage(Address, U256, U256),
}

impl StateEdit {
    /// The account edited.
    pub fn address(&self) -> Address {
        match self {
            StateEdit::Balance(a, _)
            | StateEdit::Nonce(a, _)
            | StateEdit::Code(a, _)
            | StateEdit::Storage(a, ..) => *a,
        }
    }
}

/// revm's view of a stored account. The code is left out (`None`) so that revm fetches it by
/// hash; revm's own default would claim the account has empty code.
fn info_of(account: &TrieAccount) -> AccountInfo {
    AccountInfo {
        balance: account.balance,
        nonce: account.nonce,
        code_hash: account.code_hash,
        code: None,
        ..Default::default()
    }
}

/// Reads of the base state, cached for the lifetime of an overlay (one block or one call).
#[derive(Default)]
struct ReadCache {
    accounts: HashMap<Address, Option<AccountInfo>>,
    slots: HashMap<(Address, U256), U256>,
    codes: HashMap<B256, Bytecode>,
}

/// Changes made on top of a [`StateReader`], as a revm database.
///
/// revm reads through it and commits each transaction's changes into it; nothing reaches the
/// store until [`Overlay::into_diff`] turns the changes into a [`StateDiff`].
pub struct Overlay<S> {
    base: S,
    /// Changed account infos (code kept separately); `None` when the account was deleted.
    accounts: HashMap<Address, Option<AccountInfo>>,
    storage: HashMap<Address, HashMap<U256, U256>>,
    wiped: BTreeSet<Address>,
    codes: HashMap<B256, Bytecode>,
    /// Values read from `base`, so that each transaction of a block does not read (and revm does
    /// not re-analyse code) again.
    reads: ReadCache,
    /// EIP-161: touched empty accounts are deleted (every fork since Spurious Dragon).
    state_clear: bool,
}

impl<S: StateReader> Overlay<S> {
    /// An empty overlay over `base`.
    pub fn new(base: S) -> Self {
        Self {
            base,
            accounts: HashMap::default(),
            storage: HashMap::default(),
            wiped: BTreeSet::new(),
            codes: HashMap::default(),
            reads: ReadCache::default(),
            state_clear: true,
        }
    }

    /// Keeps touched empty accounts, as forks before Spurious Dragon did (state tests only).
    pub fn without_state_clear(mut self) -> Self {
        self.state_clear = false;
        self
    }

    /// The state this overlay changes.
    pub fn base(&self) -> &S {
        &self.base
    }

    /// Adds `amount` to an account's balance outside the EVM (fee routing, genesis).
    pub fn credit(&mut self, address: Address, amount: U256) -> Result<(), StoreError> {
        if amount.is_zero() {
            return Ok(());
        }
        let mut info = Database::basic(self, address)?.unwrap_or_default();
        info.balance += amount;
        self.accounts.insert(address, Some(info));
        Ok(())
    }

    /// Sets an account's fields and code outright (genesis allocation, state-test pre-state).
    pub fn set_account(&mut self, address: Address, balance: U256, nonce: u64, code: Bytes) {
        let code_hash = if code.is_empty() {
            KECCAK_EMPTY
        } else {
            keccak256(&code)
        };
        if !code.is_empty() {
            self.codes.insert(code_hash, Bytecode::new_raw(code));
        }
        let info = info_of(&TrieAccount::new(
            nonce,
            balance,
            EMPTY_ROOT_HASH,
            code_hash,
        ));
        self.accounts.insert(address, Some(info));
    }

    /// Applies a dev-chain edit of one account field or storage slot, keeping the rest of the
    /// account as it is.
    pub fn edit(&mut self, edit: &StateEdit) -> Result<(), StoreError> {
        let address = edit.address();
        let mut info = Database::basic(self, address)?.unwrap_or_default();
        match edit {
            StateEdit::Balance(_, balance) => info.balance = *balance,
            StateEdit::Nonce(_, nonce) => info.nonce = *nonce,
            StateEdit::Code(_, code) => {
                info.code_hash = if code.is_empty() {
                    KECCAK_EMPTY
                } else {
                    let hash = keccak256(code);
                    self.codes.insert(hash, Bytecode::new_raw(code.clone()));
                    hash
                };
                info.code = None;
            }
            StateEdit::Storage(_, slot, value) => self.set_storage(address, *slot, *value),
        }
        self.accounts.insert(address, Some(info));
        Ok(())
    }

    /// Writes a storage slot outright.
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) {
        self.storage.entry(address).or_default().insert(slot, value);
    }

    /// Creates an account with its code and storage outright (a genesis allocation, a state
    /// test's pre-state).
    pub fn allocate(
        &mut self,
        address: Address,
        balance: U256,
        nonce: u64,
        code: Bytes,
        storage: impl IntoIterator<Item = (U256, U256)>,
    ) {
        self.set_account(address, balance, nonce, code);
        for (slot, value) in storage {
            self.set_storage(address, slot, value);
        }
    }

    fn commit_account(&mut self, address: Address, account: Account) {
        if !account.is_touched() {
            return;
        }
        if account.is_selfdestructed() {
            self.accounts.insert(address, None);
            self.storage.remove(&address);
            self.wiped.insert(address);
            return;
        }
        if account.is_created() {
            self.storage.remove(&address);
            self.wiped.insert(address);
        }
        if self.state_clear && account.is_empty() {
            // EIP-161: touched empty accounts are removed.
            self.accounts.insert(address, None);
            return;
        }
        let mut info = account.info;
        if let Some(code) = info.code.take()
            && !code.is_empty()
        {
            self.codes.entry(info.code_hash).or_insert(code);
        }
        self.accounts.insert(address, Some(info));
        let changed = account
            .storage
            .into_iter()
            .filter(|(_, slot)| slot.is_changed());
        let slots = self.storage.entry(address).or_default();
        for (key, slot) in changed {
            slots.insert(key, slot.present_value);
        }
    }

    /// Reduces the changes to a [`StateDiff`], hashing the touched storage tries and the account
    /// trie from `parent_root`. Only the touched paths of the tries are read.
    pub fn into_diff<N: NodeReader>(
        self,
        parent_root: B256,
        nodes: &N,
    ) -> Result<StateDiff, TrieError> {
        let mut diff = StateDiff {
            wiped: self.wiped.iter().copied().collect(),
            ..Default::default()
        };
        let mut touched: BTreeMap<Address, ()> = BTreeMap::new();
        touched.extend(self.accounts.keys().map(|a| (*a, ())));
        touched.extend(self.storage.keys().map(|a| (*a, ())));
        touched.extend(self.wiped.iter().map(|a| (*a, ())));

        let mut account_trie = Trie::open(parent_root, nodes);
        for address in touched.into_keys() {
            let old = self.base.account(&address)?;
            let info = match self.accounts.get(&address) {
                Some(info) => info.clone(),
                None => old.as_ref().map(info_of),
            };
            let wiped = self.wiped.contains(&address);
            let account = match info {
                None => None,
                Some(info) => {
                    let start = match (&old, wiped) {
                        (Some(old), false) => old.storage_root,
                        _ => EMPTY_ROOT_HASH,
                    };
                    let slots = self.storage.get(&address);
                    let storage_root = match slots {
                        Some(slots) if !slots.is_empty() => {
                            let mut trie = Trie::open(start, nodes);
                            let mut sorted: Vec<_> = slots.iter().collect();
                            sorted.sort_unstable_by_key(|(k, _)| **k);
                            for (slot, value) in sorted {
                                let key = keccak256(slot.to_be_bytes::<32>());
                                let encoded = if value.is_zero() {
                                    Vec::new()
                                } else {
                                    alloy_rlp::encode(value)
                                };
                                trie.insert(key.as_slice(), encoded)?;
                                diff.storage.push((address, *slot, *value));
                            }
                            let committed = trie.commit();
                            diff.nodes.extend(committed.nodes);
                            committed.root
                        }
                        _ => start,
                    };
                    Some(TrieAccount::new(
                        info.nonce,
                        info.balance,
                        storage_root,
                        info.code_hash,
                    ))
                }
            };
            if account == old && !wiped {
                continue;
            }
            let key = keccak256(address);
            match &account {
                Some(account) => account_trie.insert(key.as_slice(), alloy_rlp::encode(account))?,
                None => account_trie.remove(key.as_slice())?,
            }
            diff.accounts.push((address, account));
        }
        let committed = account_trie.commit();
        diff.state_root = committed.root;
        diff.nodes.extend(committed.nodes);
        diff.codes = self
            .codes
            .into_iter()
            .map(|(hash, code)| (hash, code.original_bytes()))
            .collect();
        diff.codes.sort_unstable_by_key(|(hash, _)| *hash);
        Ok(diff)
    }
}

impl<S: StateReader> Overlay<S> {
    /// The account as this overlay already knows it (changed, or read before).
    fn known_account(&self, address: &Address) -> Option<Option<AccountInfo>> {
        self.accounts
            .get(address)
            .or_else(|| self.reads.accounts.get(address))
            .cloned()
    }

    fn known_code(&self, hash: &B256) -> Option<Bytecode> {
        self.codes
            .get(hash)
            .or_else(|| self.reads.codes.get(hash))
            .cloned()
    }

    fn known_slot(&self, address: &Address, index: &U256) -> Option<U256> {
        if let Some(value) = self.storage.get(address).and_then(|slots| slots.get(index)) {
            return Some(*value);
        }
        if self.wiped.contains(address) {
            return Some(U256::ZERO);
        }
        self.reads.slots.get(&(*address, *index)).copied()
    }

    fn base_code(&self, code_hash: &B256) -> Result<Bytecode, StoreError> {
        match self.base.code(code_hash)? {
            Some(bytes) => Ok(Bytecode::new_raw(bytes)),
            None if *code_hash == KECCAK_EMPTY || code_hash.is_zero() => Ok(Bytecode::default()),
            None => Err(StoreError::Corrupt(format!("code {code_hash} is missing"))),
        }
    }
}

impl<S: StateReader> Database for Overlay<S> {
    type Error = StoreError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StoreError> {
        if let Some(info) = self.known_account(&address) {
            return Ok(info);
        }
        let info = self.base.account(&address)?.as_ref().map(info_of);
        self.reads.accounts.insert(address, info.clone());
        Ok(info)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StoreError> {
        if let Some(code) = self.known_code(&code_hash) {
            return Ok(code);
        }
        let code = self.base_code(&code_hash)?;
        self.reads.codes.insert(code_hash, code.clone());
        Ok(code)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StoreError> {
        if let Some(value) = self.known_slot(&address, &index) {
            return Ok(value);
        }
        let value = self.base.storage(&address, &index)?;
        self.reads.slots.insert((address, index), value);
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StoreError> {
        self.base.block_hash(number)
    }
}

/// The same reads without caching, for tracers that look up what state was before a
/// transaction (the prestate tracer) while the EVM holds the overlay mutably.
impl<S: StateReader> DatabaseRef for Overlay<S> {
    type Error = StoreError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StoreError> {
        match self.known_account(&address) {
            Some(info) => Ok(info),
            None => Ok(self.base.account(&address)?.as_ref().map(info_of)),
        }
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StoreError> {
        match self.known_code(&code_hash) {
            Some(code) => Ok(code),
            None => self.base_code(&code_hash),
        }
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StoreError> {
        match self.known_slot(&address, &index) {
            Some(value) => Ok(value),
            None => self.base.storage(&address, &index),
        }
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StoreError> {
        self.base.block_hash(number)
    }
}

impl<S: StateReader> DatabaseCommit for Overlay<S> {
    fn commit(&mut self, changes: AddressMap<Account>) {
        for (address, account) in changes {
            self.commit_account(address, account);
        }
    }
}
