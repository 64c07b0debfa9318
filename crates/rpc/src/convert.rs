//! Stored blocks, transactions and receipts as the JSON shapes of the Ethereum JSON-RPC API.

use alloy_consensus::{
    Header, ReceiptEnvelope, Transaction as _, TxEnvelope, transaction::Recovered,
};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_rpc_types_eth::{
    Block, BlockTransactions, Header as RpcHeader, Log, Transaction, TransactionReceipt,
};
use openledger_chain::{StoreError, StoreReader, store::StoredBody};

use crate::error::RpcResult;

/// Where a transaction sits in a block.
#[derive(Debug, Clone, Copy)]
pub struct TxLocation {
    /// The block's hash.
    pub block_hash: B256,
    /// The block's number.
    pub block_number: u64,
    /// The block's timestamp.
    pub timestamp: u64,
    /// The block's base fee.
    pub base_fee: u64,
    /// The index in the block.
    pub index: u64,
}

impl TxLocation {
    /// The location of transaction `index` in the block with `header`.
    pub fn new(header: &Header, hash: B256, index: u64) -> Self {
        Self {
            block_hash: hash,
            block_number: header.number,
            timestamp: header.timestamp,
            base_fee: header.base_fee_per_gas.unwrap_or_default(),
            index,
        }
    }
}

/// A transaction, mined (with its location) or pending.
pub fn rpc_transaction(tx: TxEnvelope, sender: Address, at: Option<TxLocation>) -> Transaction {
    let effective_gas_price = at.map(|l| tx.effective_gas_price(Some(l.base_fee)));
    Transaction {
        inner: Recovered::new_unchecked(tx, sender),
        block_hash: at.map(|l| l.block_hash),
        block_number: at.map(|l| l.block_number),
        transaction_index: at.map(|l| l.index),
        effective_gas_price,
        block_timestamp: at.map(|l| l.timestamp),
    }
}

/// The RPC header of a sealed block.
pub fn rpc_header(header: Header, hash: B256) -> RpcHeader {
    let size = alloy_rlp::Encodable::length(&header);
    RpcHeader {
        hash,
        inner: header,
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(size)),
    }
}

/// Decodes a stored body into transactions with senders.
pub fn decode_body(body: &StoredBody) -> RpcResult<Vec<(TxEnvelope, Address)>> {
    body.transactions
        .iter()
        .zip(&body.senders)
        .map(|(raw, sender)| {
            let tx = TxEnvelope::decode_2718_exact(raw)
                .map_err(|e| StoreError::Corrupt(format!("stored transaction: {e}")))?;
            Ok((tx, *sender))
        })
        .collect()
}

/// Block `number` in RPC form, with full transactions or only their hashes.
pub fn rpc_block(reader: &StoreReader, number: u64, full: bool) -> RpcResult<Option<Block>> {
    let Some(header) = reader.header(number)? else {
        return Ok(None);
    };
    let body = reader.body(number)?.unwrap_or_default();
    let hash = header.hash_slow();
    let transactions = if full {
        let txs = decode_body(&body)?
            .into_iter()
            .enumerate()
            .map(|(i, (tx, sender))| {
                rpc_transaction(tx, sender, Some(TxLocation::new(&header, hash, i as u64)))
            })
            .collect();
        BlockTransactions::Full(txs)
    } else {
        // A transaction's hash is the hash of its EIP-2718 encoding, which is what the body
        // stores: block followers ask for every new block, and decoding tens of thousands of
        // transactions only to hash them again was a visible share of a node under load.
        BlockTransactions::Hashes(body.transactions.iter().map(keccak256).collect())
    };
    let size_of_body: usize = body.transactions.iter().map(|t| t.len()).sum();
    let mut rpc = rpc_header(header, hash);
    rpc.size = rpc.size.map(|s| s + U256::from(size_of_body));
    Ok(Some(Block {
        header: rpc,
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Default::default()),
    }))
}

/// All receipts of block `number` in RPC form.
pub fn rpc_receipts(
    reader: &StoreReader,
    number: u64,
) -> RpcResult<Option<Vec<TransactionReceipt>>> {
    let Some(header) = reader.header(number)? else {
        return Ok(None);
    };
    let hash = header.hash_slow();
    let txs = decode_body(&reader.body(number)?.unwrap_or_default())?;
    let raw = reader.receipts(number)?.unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len());
    let mut previous_gas = 0;
    let mut log_index = 0u64;
    for (i, ((tx, sender), raw)) in txs.into_iter().zip(raw).enumerate() {
        let receipt = ReceiptEnvelope::decode_2718_exact(&raw)
            .map_err(|e| StoreError::Corrupt(format!("stored receipt: {e}")))?;
        let at = TxLocation::new(&header, hash, i as u64);
        let tx_hash = *tx.tx_hash();
        let cumulative = receipt.cumulative_gas_used();
        let inner = receipt.map_logs(|log| {
            let rpc = rpc_log(log, at, tx_hash, log_index);
            log_index += 1;
            rpc
        });
        out.push(TransactionReceipt {
            inner,
            transaction_hash: tx_hash,
            transaction_index: Some(i as u64),
            block_hash: Some(hash),
            block_number: Some(number),
            gas_used: cumulative - previous_gas,
            effective_gas_price: tx.effective_gas_price(Some(at.base_fee)),
            blob_gas_used: None,
            blob_gas_price: None,
            from: sender,
            to: tx.to(),
            contract_address: tx.kind().is_create().then(|| sender.create(tx.nonce())),
        });
        previous_gas = cumulative;
    }
    Ok(Some(out))
}

/// A log with its position.
pub fn rpc_log(inner: alloy_primitives::Log, at: TxLocation, tx_hash: B256, log_index: u64) -> Log {
    Log {
        inner,
        block_hash: Some(at.block_hash),
        block_number: Some(at.block_number),
        block_timestamp: Some(at.timestamp),
        transaction_hash: Some(tx_hash),
        transaction_index: Some(at.index),
        log_index: Some(log_index),
        removed: false,
    }
}
