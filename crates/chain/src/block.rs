//! Block assembly: headers, the transactions and receipts roots, and the blocks the chain keeps
//! in memory for subscribers.

use std::sync::Arc;

use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header, ReceiptEnvelope, TxEnvelope};
use alloy_eips::{eip2718::Encodable2718, eip7685::EMPTY_REQUESTS_HASH};
use alloy_primitives::{Address, B256, Bloom, Bytes, keccak256};
use alloy_trie::EMPTY_ROOT_HASH;

use crate::trie::ordered_root;

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

/// Builds the header of a block with these contents.
pub fn build_header(
    params: &BlockParams,
    state_root: B256,
    transactions: &[TxEnvelope],
    receipts: &[ReceiptEnvelope],
    gas_used: u64,
) -> Header {
    let logs_bloom = receipts
        .iter()
        .fold(Bloom::ZERO, |acc, r| acc | *r.logs_bloom());
    Header {
        parent_hash: params.parent_hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: params.beneficiary,
        state_root,
        transactions_root: ordered_root(transactions.iter().map(Encodable2718::encoded_2718)),
        receipts_root: ordered_root(receipts.iter().map(Encodable2718::encoded_2718)),
        logs_bloom,
        difficulty: Default::default(),
        number: params.number,
        gas_limit: params.gas_limit,
        gas_used,
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
        let header = build_header(&params, EMPTY_ROOT_HASH, &[], &[], 0);
        assert_eq!(header.transactions_root, EMPTY_ROOT_HASH);
        assert_eq!(header.receipts_root, EMPTY_ROOT_HASH);
        assert_eq!(header.logs_bloom, Bloom::ZERO);
    }
}
