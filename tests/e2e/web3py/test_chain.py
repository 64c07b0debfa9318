"""What a web3.py user does against `openledger dev`: transfers of every type, contracts, logs and
filters, reverts, gas estimation, historical queries, subscriptions and rejected transactions."""

import asyncio

import pytest
import requests
import rlp
from eth_account import Account
from web3 import AsyncWeb3, Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.providers.persistent import WebSocketProvider

from conftest import DEV_KEYS, OPEN, TIMEOUT, base_tx, send


def deploy(w3: Web3, artifact: dict, *args, key: str = DEV_KEYS[0]):
    contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = contract.constructor(*args).build_transaction({**base_tx(w3, key), "from": Account.from_key(key).address})
    receipt = send(w3, tx, key)
    assert receipt.status == 1
    return w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"]), receipt


def test_chain_identity_and_dev_accounts(w3):
    assert w3.eth.chain_id == int(w3.net.version)
    assert w3.client_version.startswith("openledger/")
    accounts = w3.eth.accounts
    assert accounts[0] == Account.from_key(DEV_KEYS[0]).address
    assert w3.eth.get_balance(accounts[0], 0) == 10_000_000 * OPEN


@pytest.mark.parametrize("kind", ["legacy", "eip2930", "eip1559"])
def test_transfer_of_each_type_moves_exactly_value_plus_fee(w3, kind):
    sender = Account.from_key(DEV_KEYS[1]).address
    recipient = Account.create().address
    tx = {**base_tx(w3, DEV_KEYS[1]), "to": recipient, "value": 12345, "gas": 21000}
    if kind == "legacy":
        tx["gasPrice"] = w3.eth.gas_price
    elif kind == "eip2930":
        tx["gasPrice"] = w3.eth.gas_price
        tx["accessList"] = [{"address": recipient, "storageKeys": []}]
        tx["gas"] = 21000 + 2400
    else:
        tx["maxFeePerGas"] = w3.eth.gas_price * 2
        tx["maxPriorityFeePerGas"] = w3.eth.max_priority_fee
    before = w3.eth.get_balance(sender)
    receipt = send(w3, tx, DEV_KEYS[1])
    assert receipt.status == 1
    assert receipt["from"] == sender and receipt.to == recipient
    assert w3.eth.get_balance(recipient) == 12345
    fee = receipt.gasUsed * receipt.effectiveGasPrice
    assert w3.eth.get_balance(sender) == before - 12345 - fee
    mined = w3.eth.get_transaction(receipt.transactionHash)
    assert mined.blockNumber == receipt.blockNumber and mined.value == 12345
    block = w3.eth.get_block(receipt.blockNumber, full_transactions=True)
    assert block.transactions[receipt.transactionIndex]["hash"] == receipt.transactionHash


def test_base_fee_goes_to_the_treasury_and_tip_to_the_producer(w3):
    treasury = Web3.to_checksum_address("0x4f4c000000000000000000000000000000000008")
    coinbase = w3.eth.get_block("latest").miner
    tx = {**base_tx(w3, DEV_KEYS[2]), "to": Account.create().address, "value": 1, "gas": 21000,
          "maxFeePerGas": w3.eth.gas_price * 2, "maxPriorityFeePerGas": 10**9}
    receipt = send(w3, tx, DEV_KEYS[2])
    block = w3.eth.get_block(receipt.blockNumber)
    n = receipt.blockNumber
    assert w3.eth.get_balance(treasury, n) - w3.eth.get_balance(treasury, n - 1) == block.baseFeePerGas * receipt.gasUsed
    assert w3.eth.get_balance(coinbase, n) - w3.eth.get_balance(coinbase, n - 1) == 10**9 * receipt.gasUsed


def test_eip7702_delegation_sets_delegated_code(w3, artifacts):
    counter, _ = deploy(w3, artifacts["Counter"])
    authority = Account.from_key(DEV_KEYS[2])
    nonce = w3.eth.get_transaction_count(authority.address, "pending")
    auth = authority.sign_authorization({"chainId": w3.eth.chain_id, "address": counter.address, "nonce": nonce + 1})
    tx = {**base_tx(w3, DEV_KEYS[2]), "to": authority.address, "value": 0, "gas": 200_000,
          "maxFeePerGas": w3.eth.gas_price * 2, "maxPriorityFeePerGas": 10**9, "authorizationList": [auth],
          "data": counter.encode_abi("increment")}
    receipt = send(w3, tx, DEV_KEYS[2])
    assert receipt.status == 1
    assert w3.eth.get_code(authority.address) == b"\xef\x01\x00" + bytes.fromhex(counter.address[2:])
    delegated = w3.eth.contract(address=authority.address, abi=counter.abi)
    assert delegated.functions.count().call() == 1


def test_contract_deploy_call_logs_and_history(w3, artifacts):
    counter, deployed = deploy(w3, artifacts["Counter"])
    assert w3.eth.get_code(counter.address, deployed.blockNumber - 1) == b""
    assert len(w3.eth.get_code(counter.address)) > 0
    sender = Account.from_key(DEV_KEYS[0]).address
    receipts = []
    for value in (5, 7):
        tx = counter.functions.add(value).build_transaction({**base_tx(w3), "from": sender})
        receipts.append(send(w3, tx))
    assert counter.functions.count().call() == 12
    assert counter.functions.count().call(block_identifier=receipts[0].blockNumber) == 5
    assert int.from_bytes(w3.eth.get_storage_at(counter.address, 0, receipts[0].blockNumber), "big") == 5
    events = counter.events.Incremented().process_receipt(receipts[1])
    assert events[0].args.by == sender and events[0].args.newCount == 12
    logs = w3.eth.get_logs({"fromBlock": deployed.blockNumber, "toBlock": "latest", "address": counter.address})
    assert [int.from_bytes(log["data"], "big") for log in logs] == [5, 12]
    topic_filtered = w3.eth.get_logs({"fromBlock": 0, "address": counter.address,
                                      "topics": [None, "0x" + "00" * 12 + sender[2:].lower()]})
    assert len(topic_filtered) == 2
    by_hash = w3.eth.get_logs({"blockHash": receipts[1].blockHash})
    assert by_hash[0]["transactionHash"] == receipts[1].transactionHash


def test_polling_filters_report_new_blocks_logs_and_pending(w3, artifacts):
    counter, _ = deploy(w3, artifacts["Counter"])
    log_filter = counter.events.Incremented.create_filter(from_block="latest")
    block_filter = w3.eth.filter("latest")
    pending_filter = w3.eth.filter("pending")
    tx = counter.functions.increment().build_transaction({**base_tx(w3), "from": w3.eth.accounts[0]})
    receipt = send(w3, tx)
    entries = log_filter.get_new_entries()
    assert [e.args.newCount for e in entries] == [1]
    assert receipt.blockHash in block_filter.get_new_entries()
    assert receipt.transactionHash in pending_filter.get_new_entries()
    assert log_filter.get_new_entries() == []
    assert w3.eth.uninstall_filter(block_filter.filter_id)


def test_reverts_carry_their_reason_and_custom_errors(w3, artifacts):
    counter, _ = deploy(w3, artifacts["Counter"])
    with pytest.raises(ContractLogicError, match="value too large"):
        counter.functions.add(5000).call()
    with pytest.raises(ContractCustomError) as custom:
        counter.functions.addChecked(5000).call()
    selector = Web3.keccak(text="TooLarge(uint256,uint256)")[:4].hex()
    assert selector in str(custom.value.data)
    with pytest.raises(ContractLogicError, match="value too large"):
        counter.functions.add(5000).estimate_gas()
    # A reverted transaction is mined with status 0 and still pays for its gas.
    tx = counter.functions.add(5000).build_transaction({**base_tx(w3), "from": w3.eth.accounts[0], "gas": 100_000})
    receipt = send(w3, tx)
    assert receipt.status == 0 and receipt.gasUsed > 21000


def test_estimate_gas_is_enough_and_tight(w3, artifacts):
    counter, _ = deploy(w3, artifacts["Counter"])
    sender = w3.eth.accounts[0]
    estimate = counter.functions.increment().estimate_gas({"from": sender})
    too_little = counter.functions.increment().build_transaction({**base_tx(w3), "from": sender, "gas": estimate - 5000})
    assert send(w3, too_little).status == 0
    enough = counter.functions.increment().build_transaction({**base_tx(w3), "from": sender, "gas": estimate})
    receipt = send(w3, enough)
    assert receipt.status == 1 and receipt.gasUsed <= estimate
    assert w3.eth.estimate_gas({"from": sender, "to": Account.create().address, "value": 1}) == 21000


def test_fee_history_and_block_queries(w3):
    history = w3.eth.fee_history(4, "latest", [25, 75])
    assert len(history.baseFeePerGas) == len(history.gasUsedRatio) + 1
    assert len(history.reward) == len(history.gasUsedRatio)
    latest = w3.eth.get_block("latest")
    assert w3.eth.get_block(latest.hash).number == latest.number
    assert w3.eth.get_block("earliest").number == 0
    assert w3.eth.get_block("finalized").number <= w3.eth.block_number
    assert w3.eth.get_block_transaction_count(latest.number) == len(latest.transactions)


def expect_rejection(w3: Web3, raw: bytes, message: str):
    with pytest.raises(Web3RPCError, match=message):
        w3.eth.send_raw_transaction(raw)


def test_bad_transactions_are_refused_with_standard_messages(w3):
    key = DEV_KEYS[1]
    sender = Account.from_key(key).address
    good = {**base_tx(w3, key), "to": Account.create().address, "value": 1, "gas": 21000, "gasPrice": w3.eth.gas_price}
    nonce_before = w3.eth.get_transaction_count(sender)
    expect_rejection(w3, Account.sign_transaction({**good, "nonce": 0}, key).raw_transaction, "nonce too low")
    expect_rejection(w3, Account.sign_transaction({**good, "value": 10**40}, key).raw_transaction,
                     "insufficient funds for gas \\* price \\+ value")
    expect_rejection(w3, Account.sign_transaction({**good, "chainId": 1}, key).raw_transaction, "invalid chain id")
    expect_rejection(w3, Account.sign_transaction({**good, "gas": 20000}, key).raw_transaction, "intrinsic gas too low")
    # A signature whose r is zero recovers no sender at all.
    fields = rlp.decode(Account.sign_transaction(good, key).raw_transaction)
    expect_rejection(w3, rlp.encode(fields[:7] + [b"", fields[8]]), "invalid sender")
    expect_rejection(w3, b"\x01\x02garbage", "failed to decode signed transaction")
    # Nothing was changed by the refusals.
    assert w3.eth.get_transaction_count(sender, "pending") == nonce_before


def test_replacement_needs_a_fee_bump(w3):
    key = DEV_KEYS[2]
    # A transaction with a future nonce waits in the pool; replacing it needs 10% more.
    tx = {**base_tx(w3, key), "to": Account.create().address, "value": 1, "gas": 21000, "gasPrice": w3.eth.gas_price}
    future = {**tx, "nonce": tx["nonce"] + 1}
    w3.eth.send_raw_transaction(Account.sign_transaction(future, key).raw_transaction)
    expect_rejection(w3, Account.sign_transaction({**future, "value": 2}, key).raw_transaction,
                     "replacement transaction underpriced")
    bumped = {**future, "value": 3, "gasPrice": tx["gasPrice"] * 2}
    replacement = w3.eth.send_raw_transaction(Account.sign_transaction(bumped, key).raw_transaction)
    send(w3, tx, key)  # fills the gap; both are mined
    receipt = w3.eth.wait_for_transaction_receipt(replacement, timeout=TIMEOUT)
    assert receipt.status == 1
    assert w3.eth.get_transaction(replacement).value == 3


def test_websocket_subscriptions_deliver_heads_logs_and_pending(node, w3, artifacts):
    counter, _ = deploy(w3, artifacts["Counter"])

    async def scenario():
        async with AsyncWeb3(WebSocketProvider(node.ws_url)) as aw3:
            heads = await aw3.eth.subscribe("newHeads")
            logs = await aw3.eth.subscribe("logs", {"address": counter.address})
            pending = await aw3.eth.subscribe("newPendingTransactions")
            tx = counter.functions.increment().build_transaction({**base_tx(w3), "from": w3.eth.accounts[0]})
            tx_hash = await aw3.eth.send_raw_transaction(Account.sign_transaction(tx, DEV_KEYS[0]).raw_transaction)
            seen = {}
            async def collect():
                async for message in aw3.socket.process_subscriptions():
                    seen.setdefault(message["subscription"], []).append(message["result"])
                    if all(sub in seen for sub in (heads, logs, pending)):
                        return
            await asyncio.wait_for(collect(), TIMEOUT)
            receipt = await aw3.eth.wait_for_transaction_receipt(tx_hash)
            assert seen[pending][0] == tx_hash
            assert seen[logs][0]["transactionHash"] == tx_hash
            assert seen[heads][0]["number"] == receipt.blockNumber
            assert await aw3.eth.unsubscribe(heads)

    asyncio.run(scenario())


def test_batches_are_answered_and_bounded(node):
    def call(i):
        return {"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []}

    answers = requests.post(node.http_url, json=[call(i) for i in range(100)], timeout=30).json()
    assert sorted(a["id"] for a in answers) == list(range(100))
    assert all(a["result"].startswith("0x") for a in answers)
    too_many = requests.post(node.http_url, json=[call(i) for i in range(1001)], timeout=30).json()
    error = too_many["error"] if isinstance(too_many, dict) else too_many[0]["error"]
    assert "batch" in error["message"].lower()
    unknown = requests.post(node.http_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_nope", "params": []},
                            timeout=30).json()
    assert unknown["error"]["code"] == -32601
