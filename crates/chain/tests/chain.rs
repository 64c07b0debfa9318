//! The chain through its own interface: blocks from pooled transactions, value conservation,
//! restarts on the same store, and a native module called from the EVM.

use std::{sync::Arc, time::Duration};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_chain::{Chain, ChainConfig, Store, mempool::PoolLimits, miner};
use openledger_primitives::{Genesis, OPEN, addresses};
use proptest::prelude::*;

const CHAIN_ID: u64 = 1337;
/// The gas limit every test transaction is signed with.
const TX_GAS: u64 = 100_000;

fn signers(n: usize) -> Vec<PrivateKeySigner> {
    (1..=n)
        .map(|i| PrivateKeySigner::from_bytes(&U256::from(i).into()).unwrap())
        .collect()
}

fn config(signers: &[PrivateKeySigner]) -> ChainConfig {
    let genesis = Genesis::dev(
        CHAIN_ID,
        &signers.iter().map(|s| s.address()).collect::<Vec<_>>(),
    );
    ChainConfig {
        genesis,
        modules: Default::default(),
        pool: PoolLimits::default(),
    }
}

fn open(store: Store, signers: &[PrivateKeySigner]) -> Chain {
    Chain::open(store, config(signers)).unwrap()
}

fn transfer(
    signer: &PrivateKeySigner,
    nonce: u64,
    to: Address,
    value: U256,
    data: Bytes,
) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: TX_GAS,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value,
        input: data,
        ..Default::default()
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::from(tx.into_signed(signature)).encoded_2718()
}

fn total_balance(chain: &Chain, accounts: &[Address]) -> U256 {
    let head = chain.head().header.number;
    accounts
        .iter()
        .map(|a| chain.balance_at(a, head).unwrap())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Transfers move OPEN, fees go to the treasury and the producer: nothing is created or
    /// burned, whatever the transfers are.
    #[test]
    fn transfers_conserve_the_supply(moves in prop::collection::vec((0usize..4, 0usize..4, 0u64..3_000_000), 1..30)) {
        let signers = signers(4);
        let chain = open(Store::in_memory().unwrap(), &signers);
        let mut everyone: Vec<Address> = signers.iter().map(|s| s.address()).collect();
        everyone.extend([addresses::TREASURY, chain.genesis().coinbase]);
        let supply = total_balance(&chain, &everyone);
        let mut nonces = [0u64; 4];
        for (i, (from, to, amount)) in moves.into_iter().enumerate() {
            let value = OPEN * U256::from(amount);
            let raw = transfer(&signers[from], nonces[from], signers[to].address(), value, Bytes::new());
            if chain.submit_raw(&raw).is_ok() {
                nonces[from] += 1;
            }
            if i % 4 == 3 {
                chain.produce_block(1_000 + i as u64).unwrap();
            }
        }
        chain.produce_block(10_000).unwrap();
        prop_assert_eq!(total_balance(&chain, &everyone), supply);
    }
}

#[test]
fn a_restarted_chain_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let signers = signers(2);
    let (head, balance) = {
        let chain = open(Store::open(&path).unwrap(), &signers);
        chain
            .submit_raw(&transfer(
                &signers[0],
                0,
                signers[1].address(),
                OPEN,
                Bytes::new(),
            ))
            .unwrap();
        let block = chain.produce_block(5).unwrap();
        assert_eq!(block.transactions.len(), 1);
        chain.produce_block(6).unwrap();
        (
            chain.head(),
            chain.balance_at(&signers[1].address(), 2).unwrap(),
        )
    };
    let chain = open(Store::open(&path).unwrap(), &signers);
    assert_eq!(chain.head(), head);
    assert_eq!(
        chain
            .balance_at(&signers[1].address(), head.header.number)
            .unwrap(),
        balance
    );
    assert_eq!(balance, OPEN * U256::from(10_000_001u64));
    // Another genesis on the same store is refused.
    let other = Genesis::dev(CHAIN_ID + 1, &[signers[0].address()]);
    let config = ChainConfig {
        genesis: other,
        modules: Default::default(),
        pool: PoolLimits::default(),
    };
    drop(chain);
    let err = Chain::open(Store::open(&path).unwrap(), config).unwrap_err();
    assert!(err.to_string().contains("different chain"), "{err}");
}

#[test]
fn invalid_transactions_are_refused_and_change_nothing() {
    let signers = signers(2);
    let chain = open(Store::in_memory().unwrap(), &signers);
    let to = signers[1].address();
    let too_much = transfer(
        &signers[0],
        0,
        to,
        OPEN * U256::from(20_000_000u64),
        Bytes::new(),
    );
    let err = chain.submit_raw(&too_much).unwrap_err().to_string();
    assert!(
        err.starts_with("insufficient funds for gas * price + value"),
        "{err}"
    );
    // gas * price + value past 2^256: refused, not wrapped round to a small cost.
    let unpayable = transfer(&signers[0], 0, to, U256::MAX - U256::from(1), Bytes::new());
    let err = chain.submit_raw(&unpayable).unwrap_err().to_string();
    assert!(
        err.starts_with("insufficient funds for gas * price + value"),
        "{err}"
    );
    let err = chain.submit_raw(&[0x02, 0xc0]).unwrap_err().to_string();
    assert!(
        err.starts_with("failed to decode signed transaction"),
        "{err}"
    );
    let err = chain
        .submit_raw(&vec![0u8; 200_000])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("oversized data"), "{err}");
    let block = chain.produce_block(1).unwrap();
    assert!(block.transactions.is_empty());
    assert_eq!(chain.pending_nonce(&signers[0].address()).unwrap(), 0);
}

#[test]
fn the_block_producer_orders_by_tip_and_skips_nonce_gaps() {
    let signers = signers(3);
    let chain = Arc::new(open(Store::in_memory().unwrap(), &signers));
    let to = Address::repeat_byte(7);
    chain
        .submit_raw(&transfer(&signers[0], 0, to, U256::from(1), Bytes::new()))
        .unwrap();
    chain
        .submit_raw(&transfer(&signers[1], 1, to, U256::from(1), Bytes::new()))
        .unwrap();
    let block = chain.produce_block(1).unwrap();
    assert_eq!(block.transactions.len(), 1, "the gapped transaction waits");
    chain
        .submit_raw(&transfer(&signers[1], 0, to, U256::from(1), Bytes::new()))
        .unwrap();
    let block = chain.produce_block(2).unwrap();
    assert_eq!(
        block.transactions.len(),
        2,
        "the gap closed: both nonces are included"
    );
    assert_eq!(chain.balance_at(&to, 2).unwrap(), U256::from(3));
}

/// Instant mining (a zero block time) does not strand what a full block left out: with room
/// for one transfer a block, three submitted at once land in three blocks without a fourth
/// transaction arriving to wake the producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_mining_continues_past_a_full_block() {
    let signers = signers(1);
    let mut config = config(&signers);
    config.genesis.gas_limit = TX_GAS;
    let chain = Arc::new(Chain::open(Store::in_memory().unwrap(), config).unwrap());
    let to = Address::repeat_byte(7);
    for nonce in 0..3 {
        chain
            .submit_raw(&transfer(
                &signers[0],
                nonce,
                to,
                U256::from(1),
                Bytes::new(),
            ))
            .unwrap();
    }
    let miner = tokio::spawn(miner::run(
        chain.clone(),
        openledger_chain::clock::Mining::OnArrival,
    ));
    let mut events = chain.subscribe();
    let all_included = async {
        while chain.pool_counts().unwrap() != (0, 0) {
            events.recv().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all_included)
        .await
        .expect("the three transfers are mined within 30 s");
    miner.abort();
    assert_eq!(chain.head().header.number, 3, "one transfer a block");
    assert_eq!(chain.balance_at(&to, 3).unwrap(), U256::from(3));
}

#[test]
fn a_reverted_chain_is_as_it_was_and_survives_a_restart() {
    use openledger_chain::state::StateEdit;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let signers = signers(2);
    let [from, to] = [signers[0].address(), signers[1].address()];
    let store_at = Address::repeat_byte(0x5a);
    let slot = |reader: &openledger_chain::StoreReader, n: u64| {
        reader.storage(&store_at, &U256::from(n)).unwrap()
    };
    let chain = open(Store::open(&path).unwrap(), &signers);
    // Kept: a slot written in block 1, a transfer in block 2.
    chain
        .edit_state(&[StateEdit::Storage(store_at, U256::from(1), U256::from(5))])
        .unwrap();
    chain
        .submit_raw(&transfer(&signers[0], 0, to, OPEN, Bytes::new()))
        .unwrap();
    let kept = chain.produce_block(10).unwrap();
    let balances = |chain: &Chain| {
        let head = chain.head().header.number;
        (
            chain.balance_at(&from, head).unwrap(),
            chain.balance_at(&to, head).unwrap(),
        )
    };
    let kept_balances = balances(&chain);
    // Dropped: a transfer creating an account, then the slot overwritten and another written.
    let dropped_tx = chain
        .submit_raw(&transfer(
            &signers[0],
            1,
            Address::repeat_byte(7),
            OPEN,
            Bytes::new(),
        ))
        .unwrap();
    chain.produce_block(11).unwrap();
    chain
        .edit_state(&[
            StateEdit::Storage(store_at, U256::from(1), U256::from(9)),
            StateEdit::Storage(store_at, U256::from(2), U256::from(4)),
        ])
        .unwrap();
    assert_eq!(chain.head().header.number, 4);

    chain.revert_to(2).unwrap();
    assert_eq!(chain.head(), kept.header);
    let reader = chain.reader().unwrap();
    assert_eq!(reader.head().unwrap(), Some(2));
    assert_eq!(reader.tx_location(&dropped_tx).unwrap(), None);
    assert_eq!(reader.header(3).unwrap(), None);
    assert_eq!(reader.account(&Address::repeat_byte(7)).unwrap(), None);
    assert_eq!(
        (slot(&reader, 1), slot(&reader, 2)),
        (U256::from(5), U256::ZERO)
    );
    assert_eq!(balances(&chain), kept_balances);
    // The stored state hashes to the kept head's root, and the dropped nonce is free again.
    let verified = openledger_chain::verify::verify_state(&reader).unwrap();
    assert!(verified.ok(), "{verified:?}");
    assert_eq!(verified.computed_root, kept.header.header.state_root);
    drop(reader);
    let again = chain
        .submit_raw(&transfer(&signers[0], 1, to, OPEN, Bytes::new()))
        .unwrap();
    assert_eq!(chain.produce_block(12).unwrap().transactions[0].0, again);
    let head = chain.head();
    drop(chain);
    let chain = open(Store::open(&path).unwrap(), &signers);
    assert_eq!(chain.head(), head);
}
