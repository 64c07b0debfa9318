//! How modules lay out their state in their account's storage slots.
//!
//! The layout follows Solidity's, so the slots can be found with the usual tools: a mapping
//! entry lives at `keccak256(key . slot)`, a struct's fields at consecutive slots from its base,
//! and a dynamic array or byte string keeps its length at its slot and its elements (32-byte
//! chunks) from `keccak256(slot)` on.

use crate::Result;
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{SolType, SolValue};
use openledger_chain::{ModuleError, ModuleHost};

/// Declares a module's top-level slots in the order Solidity numbers a contract's state
/// variables: each name is one slot after the ones before it, `NAME: n` takes `n` consecutive
/// slots (a struct of `n` words kept in place). Nothing is numbered by hand, so a slot cannot be
/// given twice and inserting one moves the ones after it where the reader sees it.
macro_rules! slots {
    ($($(#[$doc:meta])* $name:ident $(: $words:literal)?),* $(,)?) => {
        $crate::storage::slots!(@next 0u8; $($(#[$doc])* $name $(: $words)?),*);
    };
    (@next $at:expr; ) => {};
    (@next $at:expr; $(#[$doc:meta])* $name:ident $(: $words:literal)? $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub(crate) const $name: $crate::storage::Slot = $crate::storage::Slot::root($at);
        $crate::storage::slots!(
            @next $at + $crate::storage::slots!(@words $($words)?); $($($rest)*)?
        );
    };
    (@words) => { 1u8 };
    (@words $n:literal) => { $n };
}
pub(crate) use slots;

/// Declares the fields of a struct kept in storage as offsets from its base slot
/// ([`Slot::field`]), numbered in order like [`slots!`]: `NAME: n` takes `n` words.
macro_rules! fields {
    ($(#[$mod_doc:meta])* mod $module:ident { $($(#[$doc:meta])* $name:ident $(: $words:literal)?),* $(,)? }) => {
        $(#[$mod_doc])*
        pub(crate) mod $module {
            $crate::storage::fields!(@next 0u8; $($(#[$doc])* $name $(: $words)?),*);
        }
    };
    (@next $at:expr; ) => {};
    (@next $at:expr; $(#[$doc:meta])* $name:ident $(: $words:literal)? $(, $($rest:tt)*)?) => {
        $(#[$doc])*
        pub(crate) const $name: u8 = $at;
        $crate::storage::fields!(
            @next $at + $crate::storage::fields!(@words $($words)?); $($($rest)*)?
        );
    };
    (@words) => { 1u8 };
    (@words $n:literal) => { $n };
}
pub(crate) use fields;

/// A storage location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(pub U256);

impl Slot {
    /// The `n`th top-level slot of a module's layout.
    pub const fn root(n: u8) -> Self {
        Self(U256::from_limbs([n as u64, 0, 0, 0]))
    }

    /// The entry for `key` in the mapping at this slot.
    pub fn at(self, key: impl Word) -> Self {
        let mut preimage = [0u8; 64];
        preimage[..32].copy_from_slice(&key.to_word().to_be_bytes::<32>());
        preimage[32..].copy_from_slice(&self.0.to_be_bytes::<32>());
        Self(keccak256(preimage).into())
    }

    /// The field `offset` slots after this struct's base.
    pub fn field(self, offset: u8) -> Self {
        Self(self.0.wrapping_add(U256::from(offset)))
    }

    /// The slot of element `index` of the array (or byte string) at this slot.
    fn element(self, index: u64) -> Self {
        let data: U256 = keccak256(self.0.to_be_bytes::<32>()).into();
        Self(data.wrapping_add(U256::from(index)))
    }
}

/// `(slot, value)` pairs placing `values` in consecutive slots from `base`, as a module's
/// genesis storage lays out its parameters.
pub fn consecutive(base: Slot, values: impl IntoIterator<Item = U256>) -> Vec<(U256, U256)> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| (base.field(i as u8).0, value))
        .collect()
}

/// The words a struct of one-word fields (a static ABI struct: integers, addresses, booleans)
/// is kept in from its base slot, one field a slot: its ABI encoding's words.
pub fn struct_words<T: SolValue>(value: &T) -> Vec<U256> {
    value
        .abi_encode()
        .chunks_exact(32)
        .map(U256::from_be_slice)
        .collect()
}

/// A value that fits in one storage word.
pub trait Word: Sized {
    /// The value as a word.
    fn to_word(self) -> U256;
    /// The value from a word this type wrote.
    fn from_word(word: U256) -> Self;
}

impl Word for U256 {
    fn to_word(self) -> U256 {
        self
    }
    fn from_word(word: U256) -> Self {
        word
    }
}

impl Word for B256 {
    fn to_word(self) -> U256 {
        self.into()
    }
    fn from_word(word: U256) -> Self {
        word.into()
    }
}

impl Word for Address {
    fn to_word(self) -> U256 {
        self.into_word().into()
    }
    fn from_word(word: U256) -> Self {
        Address::from_word(word.into())
    }
}

impl Word for bool {
    fn to_word(self) -> U256 {
        U256::from(self)
    }
    fn from_word(word: U256) -> Self {
        !word.is_zero()
    }
}

macro_rules! uint_word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            fn to_word(self) -> U256 {
                U256::from(self)
            }
            fn from_word(word: U256) -> Self {
                word.saturating_to()
            }
        }
    )*};
}
uint_word!(u8, u32, u64);

/// The storage of one module's account, read and written through the [`ModuleHost`]: writes
/// are allowed only to the calling module's own account, reads to any module's.
pub struct Storage<'h> {
    host: &'h mut dyn ModuleHost,
    address: Address,
}

impl<'h> Storage<'h> {
    /// The calling module's own storage.
    pub fn own(host: &'h mut dyn ModuleHost) -> Self {
        let address = host.address();
        Self { host, address }
    }

    /// Another module's storage, for reading.
    pub fn of(host: &'h mut dyn ModuleHost, address: Address) -> Self {
        Self { host, address }
    }

    /// The host, for what is not storage: events, transfers, the block.
    pub fn host(&mut self) -> &mut dyn ModuleHost {
        self.host
    }

    /// Reads a word.
    pub fn get<T: Word>(&mut self, slot: Slot) -> Result<T> {
        let word = if self.address == self.host.address() {
            self.host.sload(slot.0)?
        } else {
            self.host.sload_from(self.address, slot.0)?
        };
        Ok(T::from_word(word))
    }

    /// Writes a word.
    pub fn set<T: Word>(&mut self, slot: Slot, value: T) -> Result<()> {
        if self.address != self.host.address() {
            return Err(ModuleError::Fatal(format!(
                "module {} wrote to the storage of {}",
                self.host.address(),
                self.address
            )));
        }
        self.host.sstore(slot.0, value.to_word())
    }

    /// Reads a struct of one-word fields kept from `base` on ([`struct_words`]).
    pub fn get_struct<T>(&mut self, base: Slot) -> Result<T>
    where
        T: SolValue + From<<T::SolType as SolType>::RustType>,
    {
        let words = T::SolType::ENCODED_SIZE.expect("a struct of one-word fields") / 32;
        let mut encoded = Vec::with_capacity(words * 32);
        for field in 0..words {
            let word: U256 = self.get(base.field(field as u8))?;
            encoded.extend_from_slice(&word.to_be_bytes::<32>());
        }
        T::abi_decode(&encoded).map_err(|e| ModuleError::Fatal(format!("stored struct: {e}")))
    }

    /// Writes a struct of one-word fields from `base` on ([`struct_words`]).
    pub fn set_struct<T: SolValue>(&mut self, base: Slot, value: &T) -> Result<()> {
        for (field, word) in struct_words(value).into_iter().enumerate() {
            self.set(base.field(field as u8), word)?;
        }
        Ok(())
    }

    /// Adds `delta` to the integer at `slot` and returns the new value.
    pub fn add(&mut self, slot: Slot, delta: U256) -> Result<U256> {
        let value = self.get::<U256>(slot)?.saturating_add(delta);
        self.set(slot, value)?;
        Ok(value)
    }

    /// Reads a byte string.
    pub fn get_bytes(&mut self, slot: Slot) -> Result<Vec<u8>> {
        let len: u64 = self.get(slot)?;
        let mut out = Vec::with_capacity(len as usize);
        for chunk in 0..len.div_ceil(32) {
            let word: B256 = self.get(slot.element(chunk))?;
            let take = (len as usize - out.len()).min(32);
            out.extend_from_slice(&word[..take]);
        }
        Ok(out)
    }

    /// Writes a byte string.
    pub fn set_bytes(&mut self, slot: Slot, bytes: &[u8]) -> Result<()> {
        self.set(slot, bytes.len() as u64)?;
        for (index, chunk) in bytes.chunks(32).enumerate() {
            let mut word = B256::ZERO;
            word[..chunk.len()].copy_from_slice(chunk);
            self.set(slot.element(index as u64), word)?;
        }
        Ok(())
    }

    /// Reads a string written by [`Storage::set_string`].
    pub fn get_string(&mut self, slot: Slot) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.get_bytes(slot)?).into_owned())
    }

    /// Writes a string.
    pub fn set_string(&mut self, slot: Slot, value: &str) -> Result<()> {
        self.set_bytes(slot, value.as_bytes())
    }

    /// The length of the array at `slot`.
    pub fn len(&mut self, array: Slot) -> Result<u64> {
        self.get(array)
    }

    /// Element `index` of the array at `slot`.
    pub fn item<T: Word>(&mut self, array: Slot, index: u64) -> Result<T> {
        self.get(array.element(index))
    }

    /// Overwrites element `index` of the array at `slot`.
    pub fn set_item<T: Word>(&mut self, array: Slot, index: u64, value: T) -> Result<()> {
        self.set(array.element(index), value)
    }

    /// Appends to the array at `slot`; returns the new element's index.
    pub fn push<T: Word>(&mut self, array: Slot, value: T) -> Result<u64> {
        let index = self.len(array)?;
        self.set(array.element(index), value)?;
        self.set(array, index + 1)?;
        Ok(index)
    }

    /// Elements `offset..offset + limit` of the array at `slot` (fewer at its end).
    pub fn items<T: Word>(&mut self, array: Slot, offset: u64, limit: u64) -> Result<Vec<T>> {
        let end = self.len(array)?.min(offset.saturating_add(limit));
        (offset..end).map(|i| self.item(array, i)).collect()
    }

    /// Replaces the array at `slot` with `values`.
    pub fn set_items<T: Word>(&mut self, array: Slot, values: Vec<T>) -> Result<()> {
        self.set(array, values.len() as u64)?;
        for (index, value) in values.into_iter().enumerate() {
            self.set(array.element(index as u64), value)?;
        }
        Ok(())
    }

    /// Reads an array of byte strings (each element slot is a byte string's slot).
    pub fn get_bytes_items(&mut self, array: Slot) -> Result<Vec<Vec<u8>>> {
        let len = self.len(array)?;
        (0..len).map(|i| self.get_bytes(array.element(i))).collect()
    }

    /// Replaces the array of byte strings at `slot`.
    pub fn set_bytes_items<B: AsRef<[u8]>>(&mut self, array: Slot, values: &[B]) -> Result<()> {
        self.set(array, values.len() as u64)?;
        for (index, value) in values.iter().enumerate() {
            self.set_bytes(array.element(index as u64), value.as_ref())?;
        }
        Ok(())
    }

    /// Reads an array of strings.
    pub fn get_strings(&mut self, array: Slot) -> Result<Vec<String>> {
        Ok(self
            .get_bytes_items(array)?
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect())
    }

    /// Replaces the array of strings at `slot`.
    pub fn set_strings(&mut self, array: Slot, values: &[String]) -> Result<()> {
        self.set_bytes_items(array, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryHost;

    #[test]
    fn mapping_slots_match_solidity() {
        // keccak256(abi.encode(uint256(1), uint256(0))): `mapping(uint => ..)` at slot 0, key 1.
        let expected: U256 =
            keccak256([U256::from(1).to_be_bytes::<32>(), [0u8; 32]].concat()).into();
        assert_eq!(Slot::root(0).at(1u64).0, expected);
    }

    #[test]
    fn strings_and_arrays_round_trip() {
        let mut world = MemoryHost::new();
        world.run_as(Address::repeat_byte(1), false, |host| {
            let mut storage = Storage::own(host);
            strings_and_arrays(&mut storage);
        });
    }

    fn strings_and_arrays(storage: &mut Storage<'_>) {
        let long = "a string longer than one thirty-two byte storage word, with ünïcode";
        storage.set_string(Slot::root(3), long).unwrap();
        assert_eq!(storage.get_string(Slot::root(3)).unwrap(), long);
        let tags = vec!["medical".to_string(), String::new(), "x".repeat(70)];
        storage.set_strings(Slot::root(4), &tags).unwrap();
        assert_eq!(storage.get_strings(Slot::root(4)).unwrap(), tags);
        for v in [5u64, 6, 7] {
            storage.push(Slot::root(5), v).unwrap();
        }
        assert_eq!(
            storage.items::<u64>(Slot::root(5), 1, 10).unwrap(),
            vec![6, 7]
        );
    }

    crate::storage::slots! {
        FIRST,
        PAIR: 2,
        AFTER_PAIR,
    }

    crate::storage::fields! {
        mod record {
            HASH,
            VOTES: 3,
            LAST,
        }
    }

    #[test]
    fn declared_slots_and_fields_follow_each_other() {
        assert_eq!([FIRST, PAIR, AFTER_PAIR].map(|s| s.0.to::<u8>()), [0, 1, 3]);
        assert_eq!([record::HASH, record::VOTES, record::LAST], [0, 1, 4]);
    }

    #[test]
    fn structs_are_kept_one_field_a_slot() {
        let mut world = MemoryHost::new();
        world.run_as(Address::repeat_byte(1), false, |host| {
            structs_one_field_a_slot(&mut Storage::own(host));
        });
    }

    fn structs_one_field_a_slot(storage: &mut Storage<'_>) {
        let params = crate::abi::IDatanets::AccessParams {
            protocolSharePpm: 25_000,
            ownerSharePpm: 7,
            maxPricePerRow: U256::MAX,
        };
        storage.set_struct(Slot::root(9), &params).unwrap();
        assert_eq!(storage.get::<u64>(Slot::root(10)).unwrap(), 7);
        assert_eq!(storage.get::<U256>(Slot::root(11)).unwrap(), U256::MAX);
        let back: crate::abi::IDatanets::AccessParams = storage.get_struct(Slot::root(9)).unwrap();
        assert_eq!(back, params);
    }

    #[test]
    fn writes_to_another_module_fail() {
        let mut world = MemoryHost::new();
        world.run_as(Address::repeat_byte(1), false, |host| {
            let mut other = Storage::of(host, Address::repeat_byte(2));
            assert!(matches!(
                other.set(Slot::root(0), 1u64),
                Err(ModuleError::Fatal(_))
            ));
        });
    }
}
