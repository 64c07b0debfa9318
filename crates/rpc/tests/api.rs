//! The Ethereum API over a real chain: proofs that verify against the state root (now and at an
//! older block), a native module called through `eth_call`, request limits, and the transaction
//! hashes a block lists.

use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::{BlockId, BlockNumberOrTag, eip2718::Encodable2718};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, keccak256};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_rpc_types_trace::geth::{GethDebugTracingCallOptions, GethDebugTracingOptions};
use alloy_serde::JsonStorageKey;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use alloy_trie::{Nibbles, proof::verify_proof};
use openledger_chain::{Chain, ChainConfig, Store, mempool::PoolLimits};
use openledger_primitives::{Genesis, addresses};
use openledger_protocol::abi::ITreasury;
use openledger_rpc::{EthApi, RpcConfig, RpcError};

const CHAIN_ID: u64 = 1337;

fn setup() -> (EthApi, PrivateKeySigner) {
    let signer = PrivateKeySigner::from_bytes(&B256::with_last_byte(1)).unwrap();
    let genesis = Genesis::dev(CHAIN_ID, &[signer.address()]);
    let config = ChainConfig {
        genesis,
        modules: openledger_protocol::modules(),
        pool: PoolLimits::default(),
    };
    let chain = Arc::new(Chain::open(Store::in_memory().unwrap(), config).unwrap());
    (EthApi::new(chain, RpcConfig::default()), signer)
}

/// Pools a transaction with nonce `nonce`; its hash.
fn submit(api: &EthApi, signer: &PrivateKeySigner, nonce: u64, to: TxKind, input: &[u8]) -> B256 {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 1,
        to,
        input: Bytes::copy_from_slice(input),
        ..Default::default()
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
    api.send_raw_transaction(raw.into()).unwrap()
}

/// Sends a transaction and seals it in a block of its own; the block's number.
fn send(api: &EthApi, signer: &PrivateKeySigner, to: TxKind, input: &[u8]) -> u64 {
    let nonce = api.transaction_count(signer.address(), None).unwrap();
    submit(api, signer, nonce, to, input);
    let block = api.chain().produce_block(1_000 + nonce).unwrap();
    block.header.header.number
}

fn verify(api: &EthApi, address: Address, slot: U256, at: u64) -> (U256, U256) {
    let block = api.block(BlockId::number(at), false).unwrap().unwrap();
    let proof = api
        .proof(
            address,
            vec![JsonStorageKey::Number(slot)],
            Some(BlockId::number(at)),
        )
        .unwrap();
    let account = alloy_trie::TrieAccount::new(
        proof.nonce,
        proof.balance,
        proof.storage_hash,
        proof.code_hash,
    );
    let nodes: Vec<Bytes> = proof.account_proof.clone();
    verify_proof(
        block.header.state_root,
        Nibbles::unpack(keccak256(address)),
        (account != alloy_trie::TrieAccount::default()).then(|| alloy_rlp::encode(account)),
        &nodes,
    )
    .expect("account proof verifies against the block's state root");
    let storage = &proof.storage_proof[0];
    let expected = (!storage.value.is_zero()).then(|| alloy_rlp::encode(storage.value));
    verify_proof(
        proof.storage_hash,
        Nibbles::unpack(keccak256(B256::from(slot))),
        expected,
        &storage.proof,
    )
    .expect("storage proof verifies against the account's storage root");
    (proof.balance, storage.value)
}

#[test]
fn proofs_verify_against_current_and_past_state_roots() {
    let (api, signer) = setup();
    // Init code that stores its calldata-free constant 42 in slot 1 and deploys empty code:
    // PUSH1 42 PUSH1 1 SSTORE STOP.
    let created = send(
        &api,
        &signer,
        TxKind::Create,
        &[0x60, 0x2a, 0x60, 0x01, 0x55, 0x00],
    );
    let contract = signer.address().create(0);
    assert_eq!(
        verify(&api, contract, U256::from(1), created).1,
        U256::from(42)
    );
    // A later block changes the signer's balance; the old proof still verifies at the old root.
    let later = send(&api, &signer, TxKind::Call(Address::repeat_byte(9)), &[]);
    let (old_balance, _) = verify(&api, signer.address(), U256::ZERO, created);
    let (new_balance, _) = verify(&api, signer.address(), U256::ZERO, later);
    assert!(new_balance < old_balance);
    // An absent account and slot prove absence.
    assert_eq!(
        verify(&api, Address::repeat_byte(0xee), U256::from(5), later),
        (U256::ZERO, U256::ZERO)
    );
}

#[test]
fn the_treasury_module_answers_eth_call_and_collects_base_fees() {
    let (api, signer) = setup();
    let call = |at: Option<BlockId>| {
        let request = TransactionRequest::default()
            .to(addresses::TREASURY)
            .input(ITreasury::balanceCall {}.abi_encode().into());
        let output = api.call(request, at).unwrap();
        ITreasury::balanceCall::abi_decode_returns(&output).unwrap()
    };
    let before = call(None);
    assert_eq!(before, api.balance(addresses::TREASURY, None).unwrap());
    let block = send(&api, &signer, TxKind::Call(Address::repeat_byte(3)), &[]);
    let header = api
        .block(BlockId::number(block), false)
        .unwrap()
        .unwrap()
        .header;
    let receipt = api
        .block_receipts(BlockId::number(block))
        .unwrap()
        .unwrap()
        .remove(0);
    let base_fee = U256::from(header.base_fee_per_gas.unwrap()) * U256::from(receipt.gas_used);
    assert_eq!(call(None) - before, base_fee);
    assert_eq!(call(Some(BlockId::number(block - 1))), before);
    // An unknown selector reverts.
    let request = TransactionRequest::default()
        .to(addresses::TREASURY)
        .input(Bytes::from_static(&[1, 2, 3, 4]).into());
    assert!(matches!(
        api.call(request, None),
        Err(RpcError::Reverted { .. })
    ));
}

#[test]
fn log_queries_over_too_many_blocks_are_refused() {
    let (api, _) = setup();
    for t in 0..3 {
        api.chain().produce_block(t).unwrap();
    }
    let config = RpcConfig {
        max_log_block_range: 2,
        ..RpcConfig::default()
    };
    // A range that ends before it starts is an error, as geth says, not an empty answer.
    let err = api
        .logs(&Filter::new().from_block(3).to_block(1))
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::InvalidParams("invalid block range params".into())
    );
    let limited = EthApi::new(api.chain().clone(), config);
    let err = limited
        .logs(&Filter::new().from_block(0).to_block(3))
        .unwrap_err();
    assert!(matches!(err, RpcError::LimitExceeded(_)), "{err:?}");
    assert!(
        limited
            .logs(&Filter::new().from_block(2).to_block(3))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_block_lists_the_hashes_its_transactions_were_sent_under() {
    let (api, signer) = setup();
    let legacy = TxLegacy {
        chain_id: Some(CHAIN_ID),
        nonce: 0,
        gas_price: 10_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(4)),
        ..Default::default()
    };
    let dynamic = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce: 1,
        gas_limit: 21_000,
        max_fee_per_gas: 10_000_000_000,
        to: TxKind::Call(Address::repeat_byte(5)),
        ..Default::default()
    };
    let legacy_signature = signer.sign_hash_sync(&legacy.signature_hash()).unwrap();
    let dynamic_signature = signer.sign_hash_sync(&dynamic.signature_hash()).unwrap();
    let txs = [
        TxEnvelope::from(legacy.into_signed(legacy_signature)),
        TxEnvelope::from(dynamic.into_signed(dynamic_signature)),
    ];
    // The hashes a wallet computes for what it signed, and which the node must answer with.
    let signed: Vec<B256> = txs.iter().map(|tx| *tx.tx_hash()).collect();
    let sent: Vec<B256> = txs
        .iter()
        .map(|tx| api.send_raw_transaction(tx.encoded_2718().into()).unwrap())
        .collect();
    assert_eq!(sent, signed);
    let number = api
        .chain()
        .produce_block(1_000)
        .unwrap()
        .header
        .header
        .number;
    let hashes = api.block(BlockId::number(number), false).unwrap().unwrap();
    assert_eq!(hashes.transactions.hashes().collect::<Vec<_>>(), signed);
    let full = api.block(BlockId::number(number), true).unwrap().unwrap();
    assert_eq!(full.transactions.hashes().collect::<Vec<_>>(), signed);
}

#[test]
fn fee_history_refuses_more_percentiles_than_geth_allows_before_any_work() {
    let (api, _) = setup();
    api.chain().produce_block(1).unwrap();
    let too_many: Vec<f64> = (0..=100).map(|i| i as f64 / 101.0 * 100.0).collect();
    let err = api
        .fee_history(1024, BlockNumberOrTag::Latest, Some(too_many.clone()))
        .unwrap_err();
    assert_eq!(
        err,
        RpcError::InvalidParams("invalid reward percentile: over the query limit 100".into())
    );
    let history = api
        .fee_history(
            1024,
            BlockNumberOrTag::Latest,
            Some(too_many[..100].to_vec()),
        )
        .unwrap();
    assert_eq!(history.reward.unwrap()[0].len(), 100);
}

#[test]
fn estimating_gas_for_an_account_that_cannot_pay_names_the_funds() {
    let (api, signer) = setup();
    let request = |from: Address, price: u128, value: U256| TransactionRequest {
        from: Some(from),
        to: Some(TxKind::Call(Address::repeat_byte(9))),
        max_fee_per_gas: Some(price),
        value: Some(value),
        ..Default::default()
    };
    let empty = Address::repeat_byte(0x77);
    let err = api
        .estimate_gas(request(empty, 2_000_000_000, U256::ZERO), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("insufficient funds for gas * price + value"),
        "{err}"
    );
    let balance = api.balance(signer.address(), None).unwrap();
    let err = api
        .estimate_gas(request(signer.address(), 1, balance), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("insufficient funds for gas * price + value"),
        "{err}"
    );
    // Without a fee, an empty account's transfer estimates as usual.
    assert_eq!(
        api.estimate_gas(request(empty, 0, U256::ZERO), None)
            .unwrap(),
        21_000
    );
}

/// Init code deploying `runtime` (at most 255 bytes).
fn deploy_code(runtime: &[u8]) -> Vec<u8> {
    // PUSH1 len DUP1 PUSH1 12 PUSH1 0 CODECOPY PUSH1 0 RETURN, then the runtime.
    let mut init = vec![
        0x60,
        runtime.len() as u8,
        0x80,
        0x60,
        12,
        0x60,
        0,
        0x39,
        0x60,
        0,
        0xf3,
    ];
    init.push(0x00);
    init.extend_from_slice(runtime);
    init
}

fn word(n: u8) -> [u8; 32] {
    B256::with_last_byte(n).0
}

fn json(trace: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(trace).unwrap()
}

fn tracer(name: &str) -> GethDebugTracingOptions {
    serde_json::from_value(serde_json::json!({ "tracer": name })).unwrap()
}

#[test]
fn a_traced_transaction_is_replayed_as_it_ran_in_its_block() {
    let (api, signer) = setup();
    // Stores its first calldata word in slot 0: PUSH1 0 CALLDATALOAD PUSH1 0 SSTORE STOP.
    send(
        &api,
        &signer,
        TxKind::Create,
        &deploy_code(&[0x60, 0, 0x35, 0x60, 0, 0x55, 0x00]),
    );
    let contract = signer.address().create(0);
    // Two writes in one block: the second one's trace must see the first one's value.
    let first = submit(&api, &signer, 1, TxKind::Call(contract), &word(5));
    let second = submit(&api, &signer, 2, TxKind::Call(contract), &word(7));
    let block = api.chain().produce_block(2_000).unwrap();
    assert_eq!(block.transactions.len(), 2);

    let logged = json(&api.trace_transaction(second, Default::default()).unwrap());
    let receipt = api.receipt(second).unwrap().unwrap();
    assert_eq!(logged["gas"], receipt.gas_used);
    assert_eq!(logged["failed"], false);
    let ops: Vec<&str> = logged["structLogs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["PUSH1", "CALLDATALOAD", "PUSH1", "SSTORE", "STOP"]);

    let prestate = json(
        &api.trace_transaction(second, tracer("prestateTracer"))
            .unwrap(),
    );
    let slot = format!("{:#x}", B256::ZERO);
    assert_eq!(
        prestate[format!("{contract:#x}")]["storage"][&slot],
        format!("{:#x}", B256::with_last_byte(5)),
        "{prestate}"
    );

    // The base fee the chain credits to the treasury outside the EVM shows in the diff too.
    let diff: GethDebugTracingOptions = serde_json::from_value(
        serde_json::json!({ "tracer": "prestateTracer", "tracerConfig": { "diffMode": true } }),
    )
    .unwrap();
    let diff = json(&api.trace_transaction(second, diff).unwrap());
    let treasury = format!("{:#x}", addresses::TREASURY);
    let balance = |side: &str| {
        U256::from_str_radix(
            diff[side][&treasury]["balance"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap()
    };
    let base_fee = block.header.header.base_fee_per_gas.unwrap();
    assert_eq!(
        balance("post") - balance("pre"),
        U256::from(base_fee) * U256::from(receipt.gas_used),
        "{diff}"
    );

    let call = json(&api.trace_transaction(first, tracer("callTracer")).unwrap());
    assert_eq!(call["type"], "CALL");
    assert_eq!(call["from"], format!("{:#x}", signer.address()));
    assert_eq!(call["to"], format!("{contract:#x}"));
    assert_eq!(call["input"], format!("{:#x}", B256::with_last_byte(5)));

    let number = BlockId::number(block.header.header.number);
    let by_block = json(&api.trace_block(number, tracer("callTracer")).unwrap());
    assert_eq!(by_block[0]["txHash"], format!("{first:#x}"));
    assert_eq!(by_block[1]["txHash"], format!("{second:#x}"));
    let flat = api.parity_trace_block(number).unwrap();
    assert_eq!(
        flat.iter().map(|t| t.transaction_hash).collect::<Vec<_>>(),
        [Some(first), Some(second)]
    );
    let err = api
        .trace_transaction(first, tracer("noSuchTracer"))
        .unwrap_err();
    assert!(matches!(err, RpcError::InvalidParams(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("unknown tracer \"noSuchTracer\""),
        "{err}"
    );
    let err = api.trace_transaction(B256::repeat_byte(3), Default::default());
    assert!(matches!(err, Err(RpcError::NotFound(_))), "{err:?}");
}

#[test]
fn a_struct_log_is_bounded_before_it_grows_and_a_call_trace_is_not() {
    let (api, signer) = setup();
    // Loops until its gas runs out: JUMPDEST PUSH1 0 JUMP.
    send(
        &api,
        &signer,
        TxKind::Create,
        &deploy_code(&[0x5b, 0x60, 0, 0x56]),
    );
    let looping = TransactionRequest {
        from: Some(signer.address()),
        to: Some(TxKind::Call(signer.address().create(0))),
        gas: Some(30_000_000),
        ..Default::default()
    };
    let err = api
        .trace_call(looping.clone(), None, Default::default())
        .unwrap_err();
    assert!(matches!(err, RpcError::LimitExceeded(_)), "{err:?}");
    let calls = GethDebugTracingCallOptions::new(tracer("callTracer"));
    let call = json(&api.trace_call(looping, None, calls).unwrap());
    assert_eq!(call["error"], "out of gas", "{call}");
}
