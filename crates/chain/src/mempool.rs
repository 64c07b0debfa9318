//! The transaction pool: validated transactions waiting for a block.
//!
//! Transactions are kept per sender in nonce order. Those that continue the sender's nonce
//! without a gap are *pending* (ready for the next block); the others are *queued* until the gap
//! closes. A transaction with the same sender and nonce as a pooled one replaces it only with a
//! fee bump of at least 10% on both fee fields. The pool is bounded globally and per sender; when
//! full, the cheapest transaction (by fee cap) makes room for a better-paying one.

use std::{
    collections::{BTreeMap, BinaryHeap, HashMap},
    sync::Arc,
};

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_primitives::{Address, B256};

/// Limits of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Transactions in the whole pool.
    pub max_total: usize,
    /// Transactions of one sender, and how many nonces from its account nonce on they may
    /// span: a sender's slots can never all be taken by transactions waiting behind a gap, so
    /// the transaction that fills the gap always fits.
    pub max_per_sender: usize,
    /// How far ahead of the account nonce a transaction may be at all ("nonce too high").
    /// Nearer ones past the per-sender span are refused only for now, as the sender's share
    /// being full, since they fit once earlier nonces are mined.
    pub max_nonce_gap: u64,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            // A few blocks' worth of the node's sustained rate (~10,000 transfers a second on
            // two cores): transactions stay pooled while the block that holds them is sealed,
            // so with a smaller cap a steady load is refused as "txpool is full" while the
            // node keeps up.
            max_total: 50_000,
            // Room for one sender to keep several blocks' worth in flight: a script sending
            // from one account, or a busy sender under load, would otherwise be refused while
            // the node keeps up (at 256, a hundred senders at ~14,000 transfers a second
            // already were, and one sender was held to 256 a block). The global limit and its
            // fee-based eviction still keep one sender from taking the whole pool cheaply.
            max_per_sender: 4_096,
            max_nonce_gap: 4_096,
        }
    }
}

/// A transaction in the pool.
#[derive(Debug, Clone)]
pub struct PooledTx {
    /// The signed transaction.
    pub tx: Arc<TxEnvelope>,
    /// Its hash.
    pub hash: B256,
    /// Its recovered sender.
    pub sender: Address,
}

impl PooledTx {
    fn nonce(&self) -> u64 {
        self.tx.nonce()
    }

    fn max_fee(&self) -> u128 {
        self.tx.max_fee_per_gas()
    }

    fn priority_fee(&self) -> u128 {
        self.tx
            .max_priority_fee_per_gas()
            .unwrap_or_else(|| self.tx.max_fee_per_gas())
    }

    /// The tip the block producer earns per gas at `base_fee`, or `None` if the fee cap is below it.
    fn tip_at(&self, base_fee: u64) -> Option<u128> {
        self.tx.effective_tip_per_gas(base_fee)
    }
}

/// Why the pool refused a transaction. The messages are the ones Ethereum clients match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Already in the pool.
    #[error("already known")]
    AlreadyKnown,
    /// The nonce is below the account's.
    #[error("nonce too low: next nonce {expected}, tx nonce {got}")]
    NonceTooLow {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Too far ahead of the account nonce.
    #[error("nonce too high: next nonce {expected}, tx nonce {got}")]
    NonceTooHigh {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Same nonce as a pooled transaction without a 10% fee bump.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// No room, and the transaction does not pay more than what is pooled.
    #[error("txpool is full")]
    PoolFull,
    /// The sender has too many transactions pooled.
    #[error("account limit exceeded: {0} transactions pooled")]
    SenderFull(usize),
}

/// The outcome of adding a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The transaction it replaced, if any.
    pub replaced: Option<B256>,
    /// Transactions evicted to make room.
    pub evicted: Vec<B256>,
}

/// The pool.
#[derive(Debug, Default)]
pub struct Mempool {
    limits: PoolLimits,
    by_sender: HashMap<Address, BTreeMap<u64, PooledTx>>,
    by_hash: HashMap<B256, (Address, u64)>,
}

impl Mempool {
    /// An empty pool with `limits`.
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Number of pooled transactions.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// A pooled transaction by hash.
    pub fn get(&self, hash: &B256) -> Option<&PooledTx> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.by_sender.get(sender)?.get(nonce)
    }

    /// The highest nonce pooled for `sender` that continues `state_nonce` without a gap, plus one:
    /// the nonce of the sender's next transaction including pending ones.
    pub fn next_nonce(&self, sender: &Address, state_nonce: u64) -> u64 {
        let mut next = state_nonce;
        if let Some(txs) = self.by_sender.get(sender) {
            while txs.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    /// Adds a transaction whose sender's account nonce is `state_nonce`. Balance, signature and
    /// gas checks are done before this by the caller.
    pub fn add(&mut self, pooled: PooledTx, state_nonce: u64) -> Result<Added, PoolError> {
        if self.by_hash.contains_key(&pooled.hash) {
            return Err(PoolError::AlreadyKnown);
        }
        let nonce = pooled.nonce();
        if nonce < state_nonce {
            return Err(PoolError::NonceTooLow {
                expected: state_nonce,
                got: nonce,
            });
        }
        if nonce > state_nonce + self.limits.max_nonce_gap {
            return Err(PoolError::NonceTooHigh {
                expected: state_nonce,
                got: nonce,
            });
        }
        let replaced = self.replacement(&pooled)?;
        let mut evicted = Vec::new();
        if replaced.is_none() {
            let count = self.by_sender.get(&pooled.sender).map_or(0, BTreeMap::len);
            let span = nonce - state_nonce + 1;
            if count >= self.limits.max_per_sender || span > self.limits.max_per_sender as u64 {
                return Err(PoolError::SenderFull(count));
            }
            if self.len() >= self.limits.max_total {
                evicted.push(self.evict_for(&pooled)?);
            }
        }
        self.by_hash.insert(pooled.hash, (pooled.sender, nonce));
        self.by_sender
            .entry(pooled.sender)
            .or_default()
            .insert(nonce, pooled);
        Ok(Added { replaced, evicted })
    }

    /// Checks the replacement rule; returns the hash of the transaction being replaced.
    fn replacement(&mut self, new: &PooledTx) -> Result<Option<B256>, PoolError> {
        let Some(old) = self
            .by_sender
            .get(&new.sender)
            .and_then(|txs| txs.get(&new.nonce()))
        else {
            return Ok(None);
        };
        let bumped = |old: u128, new: u128| new.saturating_mul(100) >= old.saturating_mul(110);
        if !bumped(old.max_fee(), new.max_fee()) || !bumped(old.priority_fee(), new.priority_fee())
        {
            return Err(PoolError::ReplacementUnderpriced);
        }
        let hash = old.hash;
        self.by_hash.remove(&hash);
        Ok(Some(hash))
    }

    /// Evicts the pooled transaction with the lowest fee cap (the last nonce of another sender, so
    /// no gap is created) if `new` pays more.
    fn evict_for(&mut self, new: &PooledTx) -> Result<B256, PoolError> {
        let victim = self
            .by_sender
            .iter()
            .filter(|(sender, _)| **sender != new.sender)
            .filter_map(|(_, txs)| txs.last_key_value().map(|(_, tx)| tx))
            .min_by_key(|tx| tx.max_fee())
            .map(|tx| (tx.sender, tx.nonce(), tx.max_fee(), tx.hash));
        match victim {
            Some((sender, nonce, fee, hash)) if fee < new.max_fee() => {
                self.remove(&sender, nonce);
                Ok(hash)
            }
            _ => Err(PoolError::PoolFull),
        }
    }

    fn remove(&mut self, sender: &Address, nonce: u64) -> Option<PooledTx> {
        let txs = self.by_sender.get_mut(sender)?;
        let tx = txs.remove(&nonce)?;
        if txs.is_empty() {
            self.by_sender.remove(sender);
        }
        self.by_hash.remove(&tx.hash);
        Some(tx)
    }

    /// Drops every transaction of `sender` below `state_nonce` (included in a block, or made
    /// obsolete by one). Returns the dropped hashes.
    pub fn prune_sender(&mut self, sender: &Address, state_nonce: u64) -> Vec<B256> {
        let Some(txs) = self.by_sender.get_mut(sender) else {
            return Vec::new();
        };
        let keep = txs.split_off(&state_nonce);
        let dropped: Vec<B256> = txs.values().map(|tx| tx.hash).collect();
        *txs = keep;
        if txs.is_empty() {
            self.by_sender.remove(sender);
        }
        for hash in &dropped {
            self.by_hash.remove(hash);
        }
        dropped
    }

    /// Drops one transaction (it turned out invalid when a block tried to include it).
    pub fn discard(&mut self, hash: &B256) -> Option<PooledTx> {
        let (sender, nonce) = *self.by_hash.get(hash)?;
        self.remove(&sender, nonce)
    }

    /// Senders with pooled transactions.
    pub fn senders(&self) -> impl Iterator<Item = &Address> {
        self.by_sender.keys()
    }

    /// Pending and queued counts, given each sender's account nonce.
    pub fn counts(&self, state_nonce: impl Fn(&Address) -> u64) -> (usize, usize) {
        let pending: usize = self
            .by_sender
            .keys()
            .map(|sender| {
                let base = state_nonce(sender);
                (self.next_nonce(sender, base) - base) as usize
            })
            .sum();
        (pending, self.len() - pending)
    }

    /// Pending transactions in the order a block should include them: each sender's in nonce
    /// order, senders interleaved by the tip they pay at `base_fee` (highest first). Transactions
    /// whose fee cap is below `base_fee` wait, with every later one of their sender.
    pub fn best(&self, base_fee: u64, state_nonce: impl Fn(&Address) -> u64) -> Vec<PooledTx> {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Head {
            tip: u128,
            // Earlier-arriving senders first among equal tips would need arrival times; the
            // address keeps the order deterministic instead.
            sender: std::cmp::Reverse<Address>,
            nonce: u64,
        }
        let mut heap = BinaryHeap::new();
        for (sender, txs) in &self.by_sender {
            let nonce = state_nonce(sender);
            if let Some(tip) = txs.get(&nonce).and_then(|tx| tx.tip_at(base_fee)) {
                heap.push(Head {
                    tip,
                    sender: std::cmp::Reverse(*sender),
                    nonce,
                });
            }
        }
        let mut out = Vec::with_capacity(self.len());
        while let Some(head) = heap.pop() {
            let sender = head.sender.0;
            let txs = &self.by_sender[&sender];
            out.push(txs[&head.nonce].clone());
            let next = head.nonce + 1;
            if let Some(tip) = txs.get(&next).and_then(|tx| tx.tip_at(base_fee)) {
                heap.push(Head {
                    tip,
                    sender: head.sender,
                    nonce: next,
                });
            }
        }
        out
    }

    /// All pooled transactions of `sender`, in nonce order.
    pub fn sender_txs(&self, sender: &Address) -> Vec<PooledTx> {
        self.by_sender
            .get(sender)
            .map(|txs| txs.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559};
    use alloy_primitives::{Signature, TxKind, U256};

    fn tx(sender: u8, nonce: u64, max_fee: u128, tip: u128) -> PooledTx {
        let inner = TxEip1559 {
            chain_id: 1,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
            to: TxKind::Call(Address::ZERO),
            value: U256::ZERO,
            ..Default::default()
        };
        let signed = inner.into_signed(Signature::test_signature());
        let tx: TxEnvelope = signed.into();
        PooledTx {
            hash: *tx.tx_hash(),
            tx: Arc::new(tx),
            sender: Address::repeat_byte(sender),
        }
    }

    #[test]
    fn orders_by_nonce_and_tip_and_waits_on_gaps() {
        let mut pool = Mempool::default();
        pool.add(tx(1, 0, 100, 1), 0).unwrap();
        pool.add(tx(1, 1, 100, 50), 0).unwrap();
        pool.add(tx(2, 0, 100, 10), 0).unwrap();
        pool.add(tx(3, 5, 100, 90), 0).unwrap(); // gap: queued
        let best = pool.best(10, |_| 0);
        let order: Vec<(u8, u64)> = best.iter().map(|t| (t.sender.0[0], t.nonce())).collect();
        assert_eq!(order, vec![(2, 0), (1, 0), (1, 1)]);
        assert_eq!(pool.counts(|_| 0), (3, 1));
    }

    #[test]
    fn skips_transactions_below_the_base_fee() {
        let mut pool = Mempool::default();
        pool.add(tx(1, 0, 5, 1), 0).unwrap();
        pool.add(tx(1, 1, 100, 1), 0).unwrap();
        assert!(pool.best(10, |_| 0).is_empty());
        assert_eq!(pool.best(5, |_| 0).len(), 2);
    }

    #[test]
    fn replacement_needs_a_ten_percent_bump_on_both_fees() {
        let mut pool = Mempool::default();
        let first = tx(1, 0, 100, 10);
        pool.add(first.clone(), 0).unwrap();
        assert_eq!(
            pool.add(tx(1, 0, 109, 20), 0),
            Err(PoolError::ReplacementUnderpriced)
        );
        assert_eq!(
            pool.add(tx(1, 0, 200, 10), 0),
            Err(PoolError::ReplacementUnderpriced)
        );
        let added = pool.add(tx(1, 0, 110, 11), 0).unwrap();
        assert_eq!(added.replaced, Some(first.hash));
        assert_eq!(pool.len(), 1);
        assert!(pool.get(&first.hash).is_none());
    }

    #[test]
    fn rejects_low_nonces_and_duplicates() {
        let mut pool = Mempool::default();
        assert_eq!(
            pool.add(tx(1, 2, 100, 1), 3),
            Err(PoolError::NonceTooLow {
                expected: 3,
                got: 2
            })
        );
        pool.add(tx(1, 3, 100, 1), 3).unwrap();
        assert_eq!(pool.add(tx(1, 3, 100, 1), 3), Err(PoolError::AlreadyKnown));
    }

    #[test]
    fn full_pool_evicts_the_cheapest_for_a_better_payer() {
        let limits = PoolLimits {
            max_total: 2,
            max_per_sender: 2,
            max_nonce_gap: 10,
        };
        let mut pool = Mempool::new(limits);
        let cheap = tx(1, 0, 10, 1);
        pool.add(cheap.clone(), 0).unwrap();
        pool.add(tx(2, 0, 50, 1), 0).unwrap();
        assert_eq!(pool.add(tx(3, 0, 5, 1), 0), Err(PoolError::PoolFull));
        let better = tx(3, 0, 60, 1);
        let added = pool.add(better.clone(), 0).unwrap();
        assert_eq!(added.evicted, vec![cheap.hash]);
        assert_eq!(pool.len(), 2);
        // A sender never evicts its own earlier nonce (that would open a gap).
        let added = pool.add(tx(2, 1, 70, 1), 0).unwrap();
        assert_eq!(added.evicted, vec![better.hash]);
    }

    #[test]
    fn a_gap_always_has_room_to_be_filled() {
        let limits = PoolLimits {
            max_per_sender: 2,
            ..PoolLimits::default()
        };
        let mut pool = Mempool::new(limits);
        pool.add(tx(1, 1, 100, 1), 0).unwrap();
        // Nonce 2 would leave no slot for the missing nonce 0.
        assert_eq!(pool.add(tx(1, 2, 100, 1), 0), Err(PoolError::SenderFull(1)));
        pool.add(tx(1, 0, 100, 1), 0).unwrap();
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn pruning_drops_included_nonces() {
        let mut pool = Mempool::default();
        for n in 0..4 {
            pool.add(tx(1, n, 100, 1), 0).unwrap();
        }
        assert_eq!(pool.prune_sender(&Address::repeat_byte(1), 3).len(), 3);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.next_nonce(&Address::repeat_byte(1), 3), 4);
    }
}
