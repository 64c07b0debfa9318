//! Block assembly: headers, the transactions and receipts roots, and the blocks the chain keeps
//! in memory for subscribers.

use std::sync::Arc;

use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header, ReceiptEnvelope, TxEnvelope};
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{Address, B256, Bloom, Bytes, keccak256};
use alloy_trie::{EMPTY_ROOT_HASH, root::ordered_trie_root_encoded};

/// A header with its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// The header.
    pub header: Header,
    /// keccak256 of its RLP.
    pub hash: B256,
}

impl SealedHeader {
    /// Seals a header by hashing it.
    pub fn seal(header: Header) -> Self {
        let hash = header.hash_slow();
        Self { header, hash }
    }
}

/// A committed block as handed to subscribers.
#[derive(Debug, Clone)]
pub struct BlockInfo {
    /// The sealed header.
    pub header: SealedHeader,
    /// Transactions with their hashes and senders.
    pub transactions: Vec<(B256, Address, Arc<TxEnvelope>)>,
    /// Receipts, in transaction order.
    pub receipts: Vec<ReceiptEnvelope>,
}

/// The fields of a new block that are not derived from its contents.
#[derive(Debug, Clone)]
pub struct BlockParams {
    /// Block number.
    pub number: u64,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp (seconds).
    pub timestamp: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Base fee per gas.
    pub base_fee: u64,
    /// Receiver of priority fees.
    pub beneficiary: Address,
    /// Randomness exposed as `PREVRANDAO`.
    pub prevrandao: B256,
    /// Extra data.
    pub extra_data: Bytes,
}

impl BlockParams {
    /// Randomness for the child of `parent_hash`: not secure (a single producer chooses it), but
    /// distinct per block, as dev chains provide.
    pub fn prevrandao_for(parent_hash: B256) -> B256 {
        keccak256(parent_hash)
    }
}

/// What a header commits to besides the state: the block's EIP-2718 encoded transactions and
/// receipts (encoded once by the caller, which also stores them), their logs bloom and gas.
#[derive(Debug, Clone, Copy)]
pub struct BlockContents<'a> {
    /// Encoded transactions, in block order.
    pub transactions: &'a [Bytes],
    /// Encoded receipts, in block order.
    pub receipts: &'a [Bytes],
    /// The union of the receipts' blooms.
    pub logs_bloom: Bloom,
    /// Gas used by the block.
    pub gas_used: u64,
}

impl BlockContents<'_> {
    /// An empty block's contents.
    pub const EMPTY: BlockContents<'static> = BlockContents {
        transactions: &[],
        receipts: &[],
        logs_bloom: Bloom::ZERO,
        gas_used: 0,
    };
}

/// Builds the header of a block with these contents.
pub fn build_header(params: &BlockParams, state_root: B256, contents: BlockContents<'_>) -> Header {
    Header {
        parent_hash: params.parent_hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: params.beneficiary,
        state_root,
        transactions_root: ordered_trie_root_encoded(contents.transactions),
        receipts_root: ordered_trie_root_encoded(contents.receipts),
        logs_bloom: contents.logs_bloom,
        difficulty: Default::default(),
        number: params.number,
        gas_limit: params.gas_limit,
        gas_used: contents.gas_used,
        timestamp: params.timestamp,
        extra_data: params.extra_data.clone(),
        mix_hash: params.prevrandao,
        nonce: Default::default(),
        base_fee_per_gas: Some(params.base_fee),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        block_access_list_hash: None,
        slot_number: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_block_has_empty_roots() {
        let params = BlockParams {
            number: 1,
            parent_hash: B256::repeat_byte(1),
            timestamp: 2,
            gas_limit: 30_000_000,
            base_fee: 7,
            beneficiary: Address::ZERO,
            prevrandao: B256::ZERO,
            extra_data: Bytes::new(),
        };
        let header = build_header(&params, EMPTY_ROOT_HASH, BlockContents::EMPTY);
        assert_eq!(header.transactions_root, EMPTY_ROOT_HASH);
        assert_eq!(header.receipts_root, EMPTY_ROOT_HASH);
        assert_eq!(header.logs_bloom, Bloom::ZERO);
    }
}
