"""The dev tooling Foundry and Hardhat users bring, against `openledger dev`: geth's tracers and
parity's traces, `cast run` replaying a mined transaction, node-signed and impersonated
`eth_sendTransaction`, snapshots and reverts, and switching automine off and on."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import Web3RPCError

from conftest import DEV_KEYS, OPEN, TIMEOUT

CAST = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "cast"


def rpc(w3: Web3, method: str, *params):
    answer = w3.provider.make_request(method, list(params))
    if "error" in answer:
        raise Web3RPCError(json.dumps(answer["error"]))
    return answer["result"]


def deploy_counter(w3: Web3, artifacts: dict):
    """Deploys the Counter with a node-signed `eth_sendTransaction` from dev account 0."""
    artifact = artifacts["Counter"]
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx_hash = factory.constructor().transact({"from": w3.eth.accounts[0]})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)
    assert receipt.status == 1
    return w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])


def increment(w3: Web3, counter, sender: str):
    tx_hash = counter.functions.increment().transact({"from": sender})
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)


def test_node_signed_transactions_come_from_the_dev_accounts(own_w3, artifacts):
    w3 = own_w3
    assert w3.eth.accounts[0] == Account.from_key(DEV_KEYS[0]).address
    counter = deploy_counter(w3, artifacts)
    receipt = increment(w3, counter, w3.eth.accounts[1])
    assert receipt["from"] == w3.eth.accounts[1] and counter.functions.count().call() == 1
    with pytest.raises(Web3RPCError, match="unknown account"):
        w3.eth.send_transaction({"from": Account.create().address, "to": w3.eth.accounts[0], "gas": 21000})
    both = {"from": w3.eth.accounts[0], "to": w3.eth.accounts[1], "gas": 21000, "gasPrice": w3.eth.gas_price,
            "maxFeePerGas": w3.eth.gas_price}
    with pytest.raises(Web3RPCError, match="both gasPrice and"):
        rpc(w3, "eth_sendTransaction", {k: hex(v) if isinstance(v, int) else v for k, v in both.items()})


def test_traces_show_what_the_transaction_did(own_w3, artifacts):
    w3 = own_w3
    counter = deploy_counter(w3, artifacts)
    receipt = increment(w3, counter, w3.eth.accounts[0])
    tx = receipt.transactionHash.to_0x_hex()

    logged = rpc(w3, "debug_traceTransaction", tx, {})
    assert logged["gas"] == receipt.gasUsed and logged["failed"] is False
    assert "SSTORE" in [step["op"] for step in logged["structLogs"]]
    assert any(step["op"] == "LOG2" for step in logged["structLogs"])

    call = rpc(w3, "debug_traceTransaction", tx, {"tracer": "callTracer", "tracerConfig": {"withLog": True}})
    assert Web3.to_checksum_address(call["to"]) == counter.address
    assert call["input"] == counter.functions.increment()._encode_transaction_data()
    assert len(call["logs"]) == 1

    prestate = rpc(w3, "debug_traceTransaction", tx, {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}})
    post_storage = prestate["post"][counter.address.lower()]["storage"]
    assert int(list(post_storage.values())[0], 16) == 1

    block = rpc(w3, "debug_traceBlockByNumber", hex(receipt.blockNumber), {"tracer": "callTracer"})
    assert [t["txHash"] for t in block] == [tx]
    flat = rpc(w3, "trace_transaction", tx)
    assert flat[0]["action"]["callType"] == "call" and flat[0]["transactionHash"] == tx

    # A call traced at the head sees the count the transaction left.
    data = counter.functions.count()._encode_transaction_data()
    traced = rpc(w3, "debug_traceCall", {"to": counter.address, "data": data}, "latest", {"tracer": "callTracer"})
    assert int(traced["output"], 16) == 1
    with pytest.raises(Web3RPCError, match="-32602"):
        rpc(w3, "debug_traceTransaction", tx, {"tracer": "noSuchTracer"})


def test_cast_run_replays_a_mined_transaction(own_node, own_w3, artifacts):
    assert CAST.exists(), "npm ci in tests/e2e installs @foundry-rs/cast"
    w3 = own_w3
    counter = deploy_counter(w3, artifacts)
    increment(w3, counter, w3.eth.accounts[0])
    receipt = increment(w3, counter, w3.eth.accounts[0])
    out = subprocess.run(
        [str(CAST), "run", receipt.transactionHash.to_0x_hex(), "--rpc-url", own_node.http_url],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Transaction successfully executed" in out.stdout, out.stdout
    assert f"Gas used: {receipt.gasUsed}" in out.stdout, out.stdout
    assert counter.address[2:].lower() in out.stdout.lower(), out.stdout


def test_an_impersonated_account_sends_without_its_key(own_w3):
    w3 = own_w3
    whale = Account.create().address
    rpc(w3, "hardhat_setBalance", whale, hex(5 * OPEN))
    with pytest.raises(Web3RPCError, match="unknown account"):
        w3.eth.send_transaction({"from": whale, "to": w3.eth.accounts[0], "gas": 21000})
    assert rpc(w3, "hardhat_impersonateAccount", whale) is True
    assert rpc(w3, "anvil_impersonateAccount", whale) is None
    recipient = Account.create().address
    tx_hash = w3.eth.send_transaction({"from": whale, "to": recipient, "value": OPEN})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)
    assert receipt.status == 1 and receipt["from"] == whale
    assert w3.eth.get_transaction(tx_hash)["from"] == whale
    assert w3.eth.get_balance(recipient) == OPEN
    assert w3.eth.get_balance(whale) == 4 * OPEN - receipt.gasUsed * receipt.effectiveGasPrice
    rpc(w3, "anvil_stopImpersonatingAccount", whale)
    with pytest.raises(Web3RPCError, match="unknown account"):
        w3.eth.send_transaction({"from": whale, "to": recipient, "gas": 21000})


def test_a_revert_goes_back_to_the_snapshot_and_forgets_later_ones(own_w3, artifacts):
    w3 = own_w3
    counter = deploy_counter(w3, artifacts)
    first = rpc(w3, "evm_snapshot")
    head = w3.eth.block_number
    clock = w3.eth.get_block("latest").timestamp
    dropped = increment(w3, counter, w3.eth.accounts[0])
    second = rpc(w3, "evm_snapshot")
    increment(w3, counter, w3.eth.accounts[0])
    rpc(w3, "evm_increaseTime", 86_400)
    assert counter.functions.count().call() == 2

    assert rpc(w3, "evm_revert", first) is True
    assert w3.eth.block_number == head and counter.functions.count().call() == 0
    assert rpc(w3, "eth_getTransactionReceipt", dropped.transactionHash.to_0x_hex()) is None
    # Reverting to a snapshot taken after the one reverted to is refused: it went with it.
    assert rpc(w3, "evm_revert", second) is False
    assert rpc(w3, "evm_revert", first) is False
    # "0x" is no snapshot id: refused as geth refuses a hex quantity without digits.
    with pytest.raises(Web3RPCError, match="no digits"):
        rpc(w3, "evm_revert", "0x")
    # The clock went back too: the next block is not a day ahead.
    receipt = increment(w3, counter, w3.eth.accounts[0])
    assert w3.eth.get_block(receipt.blockNumber).timestamp < clock + 86_400
    assert receipt.blockNumber == head + 1 and counter.functions.count().call() == 1


def test_with_automine_off_transactions_wait_for_evm_mine(own_w3):
    w3 = own_w3
    assert rpc(w3, "hardhat_getAutomine") is True
    rpc(w3, "evm_setAutomine", False)
    try:
        head = w3.eth.block_number
        tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[2], "to": Account.create().address, "value": 1})
        assert rpc(w3, "eth_getTransactionReceipt", tx_hash.to_0x_hex()) is None
        assert w3.eth.block_number == head
        rpc(w3, "evm_mine")
        assert w3.eth.get_transaction_receipt(tx_hash).blockNumber == head + 1
        # An interval no clock can add is refused, and the producer keeps working.
        for method, interval in [("anvil_setIntervalMining", 2**64 - 1), ("evm_setIntervalMining", 2**64 - 1)]:
            with pytest.raises(Web3RPCError, match="-32602"):
                rpc(w3, method, interval)
    finally:
        rpc(w3, "evm_setAutomine", True)
    assert rpc(w3, "anvil_getAutomine") is True
    # Nothing waited: switching automine back on sealed no block.
    assert w3.eth.block_number == head + 1
    tx_hash = w3.eth.send_transaction({"from": w3.eth.accounts[2], "to": Account.create().address, "value": 1})
    assert w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT).blockNumber == head + 2
