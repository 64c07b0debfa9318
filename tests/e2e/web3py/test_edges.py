"""The node's edges, probed the way an abusive or careless client would: requests whose cost grows
with their parameters, half-sent requests, clock moves past any date, unpayable values, and what
`openledger dev` refuses to expose."""

import json
import os
import socket
import subprocess
import time

import pytest
import requests
from eth_account import Account
from web3.exceptions import Web3RPCError

from conftest import BINARY, DEV_KEYS, TIMEOUT, Node, base_tx, client, free_port, send

U64_MAX = 2**64 - 1
LATEST_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z


def rpc(url: str, method: str, params: list) -> dict:
    return requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                         timeout=TIMEOUT).json()


def test_fee_history_percentiles_are_bounded_before_any_work(node, w3):
    answer = rpc(node.http_url, "eth_feeHistory", ["0x400", "latest", [50.0] * 200_000])
    assert answer["error"]["code"] == -32602
    assert "over the query limit 100" in answer["error"]["message"]
    history = w3.eth.fee_history(1024, "latest", [i / 2 for i in range(100)])
    assert all(len(rewards) == 100 for rewards in history.reward)


def test_a_value_nobody_can_pay_is_refused_not_dropped(w3):
    key = DEV_KEYS[1]
    sender = Account.from_key(key).address
    tx = {**base_tx(w3, key), "to": Account.create().address, "value": 2**256 - 1, "gas": 21000,
          "gasPrice": w3.eth.gas_price}
    with pytest.raises(Web3RPCError, match="insufficient funds for gas \\* price \\+ value"):
        w3.eth.send_raw_transaction(Account.sign_transaction(tx, key).raw_transaction)
    assert w3.eth.get_transaction_count(sender, "pending") == tx["nonce"]


def test_a_fee_cap_below_the_next_base_fee_is_refused_not_pooled_forever(w3):
    key = DEV_KEYS[1]
    sender = Account.from_key(key).address
    next_base_fee = w3.eth.fee_history(1, "latest").baseFeePerGas[-1]
    assert next_base_fee > 1
    tx = {**base_tx(w3, key), "to": Account.create().address, "value": 1, "gas": 21000,
          "maxFeePerGas": next_base_fee - 1, "maxPriorityFeePerGas": 0}
    with pytest.raises(Web3RPCError, match="max fee per gas less than block base fee"):
        w3.eth.send_raw_transaction(Account.sign_transaction(tx, key).raw_transaction)
    assert w3.eth.get_transaction_count(sender, "pending") == tx["nonce"]
    assert send(w3, {**tx, "maxFeePerGas": next_base_fee}, key).status == 1


def test_estimating_gas_from_an_empty_account_with_a_fee_names_the_funds(w3):
    empty = Account.create().address
    request = {"from": empty, "to": Account.create().address, "value": 0}
    for fee in ({"maxFeePerGas": w3.eth.gas_price}, {"gasPrice": w3.eth.gas_price}):
        with pytest.raises(Web3RPCError, match="insufficient funds for gas \\* price \\+ value"):
            w3.eth.estimate_gas({**request, **fee})


def test_the_block_producer_is_nobodys_dev_account(w3):
    block = w3.eth.get_block("latest")
    assert int(block.miner, 16) == 0
    # Account 0's balance moves by exactly what its own transaction costs, though the block also
    # carries another account's tip.
    first, other = DEV_KEYS[0], DEV_KEYS[2]
    account = Account.from_key(first).address
    before = w3.eth.get_balance(account)
    fee = {"maxFeePerGas": w3.eth.gas_price * 2, "maxPriorityFeePerGas": 10**9, "gas": 21000}
    send(w3, {**base_tx(w3, other), "to": Account.create().address, "value": 1, **fee}, other)
    receipt = send(w3, {**base_tx(w3, first), "to": Account.create().address, "value": 7, **fee}, first)
    assert w3.eth.get_balance(account) == before - 7 - receipt.gasUsed * receipt.effectiveGasPrice


def test_the_clock_cannot_be_sent_past_any_date_or_wrapped(own_node, own_w3):
    w3 = own_w3
    answer = rpc(own_node.http_url, "evm_mine", [hex(U64_MAX)])
    assert answer["error"]["code"] == -32602 and "9999-12-31" in answer["error"]["message"]
    answer = rpc(own_node.http_url, "evm_increaseTime", [hex(U64_MAX)])
    assert "error" in answer
    head = w3.eth.get_block("latest")
    assert head.timestamp < LATEST_DATE
    # A pinned next timestamp is used exactly, and the blocks after it follow on from it.
    target = head.timestamp + 86_400
    assert rpc(own_node.http_url, "evm_setNextBlockTimestamp", [target])["result"] is True
    assert rpc(own_node.http_url, "evm_mine", [])["result"] == "0x0"
    assert w3.eth.get_block("latest").timestamp == target
    answer = rpc(own_node.http_url, "evm_mine", [target])
    assert "not after the head block" in answer["error"]["message"]
    rpc(own_node.http_url, "evm_mine", [])
    assert target < w3.eth.get_block("latest").timestamp < target + 60
    # Moving to the very last second is allowed; past it is not, and nothing wraps.
    assert rpc(own_node.http_url, "evm_mine", [LATEST_DATE])["result"] == "0x0"
    assert "error" in rpc(own_node.http_url, "evm_increaseTime", [1])
    rpc(own_node.http_url, "evm_mine", [])
    assert w3.eth.get_block("latest").timestamp >= LATEST_DATE


def test_half_sent_requests_cannot_take_either_port_down(node, w3):
    host, port = node.api_url.removeprefix("http://").split(":")
    stalled = []
    try:
        for _ in range(600):
            s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            s.sendall(b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-Slow:")
            stalled.append(s)
        # JSON-RPC answers at once, whatever the API port's clients do.
        assert w3.eth.chain_id > 0
        # The stalled requests are cut off by the header-read timeout, and the API serves again.
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{node.api_url}/jobs", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the API port did not recover"
            time.sleep(0.5)
    finally:
        for s in stalled:
            s.close()


@pytest.mark.parametrize("public", ["--api-addr", "--rpc-addr"])
def test_dev_keys_are_not_served_on_a_public_address_unless_asked(public):
    addrs = {"--api-addr": f"127.0.0.1:{free_port()}", "--rpc-addr": f"127.0.0.1:{free_port()}"}
    addrs[public] = f"0.0.0.0:{free_port()}"
    with subprocess.Popen(
        [str(BINARY), "dev", *[a for pair in addrs.items() for a in pair]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:
        out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0
    assert f"{public} 0.0.0.0" in out and "not a loopback address" in out and "--expose-dev-keys" in out


def post(url: str, body) -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else None
    return requests.post(url, data=data, json=None if data is not None else body,
                         headers={"Content-Type": "application/json"}, timeout=TIMEOUT)


@pytest.mark.parametrize("bad_id", [{}, [1], 1.5])
def test_a_request_whose_id_json_rpc_forbids_is_invalid(node, bad_id):
    answer = post(node.http_url, {"jsonrpc": "2.0", "id": bad_id, "method": "eth_chainId", "params": []})
    assert answer.status_code == 200
    assert answer.json()["error"]["code"] == -32600 and answer.json()["id"] is None
    # In a batch, the bad entry is answered in its place and the others as usual.
    batch = post(node.http_url, [{"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []},
                                 {"jsonrpc": "2.0", "id": bad_id, "method": "eth_chainId", "params": []}]).json()
    assert len(batch) == 2
    assert any(entry.get("id") == 7 and "result" in entry for entry in batch)
    assert any(entry.get("id") is None and entry["error"]["code"] == -32600 for entry in batch)


def test_a_notification_is_run_and_not_answered(node, w3):
    before = w3.eth.block_number
    answer = post(node.http_url, {"jsonrpc": "2.0", "method": "evm_mine", "params": []})
    assert answer.status_code == 200 and answer.content == b""
    assert w3.eth.block_number == before + 1
    # In a batch, the notification runs and only the request with an id is answered.
    batch = post(node.http_url, [{"jsonrpc": "2.0", "method": "evm_mine", "params": []},
                                 {"jsonrpc": "2.0", "id": 5, "method": "eth_chainId", "params": []}])
    assert [entry["id"] for entry in batch.json()] == [5]
    assert w3.eth.block_number == before + 2


@pytest.mark.parametrize("body", ["{", "hello", ""])
def test_a_body_that_is_not_json_is_a_parse_error_with_status_200(node, body):
    answer = post(node.http_url, body)
    assert answer.status_code == 200
    assert answer.json()["error"]["code"] == -32700


def test_parameters_are_checked_as_geth_checks_them(node):
    def error(method, params):
        answer = post(node.http_url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
        assert "result" not in answer, answer
        assert answer["error"]["code"] == -32602, answer
        return answer["error"]["message"]

    assert error("eth_blockNumber", [1]) == "too many arguments, want at most 0"
    assert error("eth_getBalance", ["0x" + "11" * 20, "latest", 3]) == "too many arguments, want at most 2"
    assert error("eth_getBalance", "x") == "non-array args"
    assert error("eth_chainId", "x") == "non-array args"
    assert error("eth_getBalance", []) == "missing value for required argument 0"
    assert error("eth_sendRawTransaction", ["02f8"]) == (
        "invalid argument 0: json: cannot unmarshal hex string without 0x prefix into Go value of type hexutil.Bytes")
    # What a client may leave out or send as null is still accepted.
    ok = post(node.http_url, {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance",
                              "params": ["0x" + "11" * 20]}).json()
    assert ok["result"] == "0x0"
    ok = post(node.http_url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).json()
    assert ok["result"].startswith("0x")


@pytest.fixture
def fresh_node():
    """A node of the test's own (the module's node has its clock at the year 9999)."""
    node = Node()
    yield node
    node.stop()


def test_anvil_and_hardhat_state_edits_take_effect_at_once(fresh_node, artifacts):
    url, w3 = fresh_node.http_url, client(fresh_node)
    target = Account.create().address
    assert rpc(url, "anvil_setBalance", [target, hex(123 * 10**18)])["result"] is None
    assert w3.eth.get_balance(target) == 123 * 10**18
    assert rpc(url, "hardhat_setBalance", [target, hex(5)])["result"] is True
    assert w3.eth.get_balance(target) == 5
    rpc(url, "anvil_setNonce", [target, hex(9)])
    assert w3.eth.get_transaction_count(target) == 9 and w3.eth.get_balance(target) == 5
    # Code set on an address runs: the Counter's runtime code answers its getter.
    counter = artifacts["Counter"]
    runtime = w3.eth.get_code(deploy_counter(w3, counter))
    rpc(url, "anvil_setCode", [target, runtime.to_0x_hex()])
    assert w3.eth.get_code(target) == runtime
    slot_value = "0x" + "00" * 31 + "2a"
    rpc(url, "hardhat_setStorageAt", [target, "0x0", slot_value])
    assert w3.eth.get_storage_at(target, 0) == bytes.fromhex(slot_value[2:])
    # The edits are in the state root: a proof of the account verifies its new balance.
    proof = w3.eth.get_proof(target, [0])
    assert proof.balance == 5 and proof.nonce == 9
    # Mining many blocks at an interval.
    before = w3.eth.get_block("latest")
    assert rpc(url, "anvil_mine", [hex(5), hex(60)])["result"] is None
    after = w3.eth.get_block("latest")
    assert after.number == before.number + 5 and after.timestamp == before.timestamp + 300
    assert "at most" in rpc(url, "hardhat_mine", [hex(10**9)])["error"]["message"]


def deploy_counter(w3, artifact) -> str:
    contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = contract.constructor().build_transaction({**base_tx(w3), "from": Account.from_key(DEV_KEYS[0]).address})
    return send(w3, tx).contractAddress


def test_while_the_dev_base_builds_the_api_says_to_retry(tmp_path):
    """A first start with no dev base model built yet: the node is up at once, builds the base in
    the background, and OpenLoRA answers 503 with a Retry-After instead of hanging."""
    port, api_port = free_port(), free_port()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [str(BINARY), "dev", "--datadir", str(tmp_path / "chain"), "--rpc-addr", f"127.0.0.1:{port}",
         "--api-addr", f"127.0.0.1:{api_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{api_port}/v1/models", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "the node did not start"
                time.sleep(0.1)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5" and "retry" in answer.json()["error"]
    finally:
        proc.kill()
        proc.wait()


def test_the_dev_node_serves_prometheus_metrics(node, w3):
    def metrics() -> dict:
        text = requests.get(f"{node.api_url}/metrics", timeout=TIMEOUT).text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if not line.startswith("#")}

    values = metrics()
    assert values["openledger_chain_head_block"] >= 0
    assert values["openledger_chain_gas_limit"] == w3.eth.get_block("latest").gasLimit
    # JSON-RPC requests by method, batch entries each; names the node does not serve as "other".
    calls = 'openledger_rpc_requests_total{method="eth_chainId"}'
    other = 'openledger_rpc_requests_total{method="other"}'
    post(node.http_url, [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(3)])
    post(node.http_url, [{"jsonrpc": "2.0", "id": i, "method": f"made_up_{i}"} for i in range(50)])
    after = metrics()
    assert after[calls] - values.get(calls, 0) == 3
    assert after[other] - values[other] == 50
    assert not any("made_up" in name for name in after)
    text = requests.get(f"{node.api_url}/metrics", timeout=TIMEOUT).text
    assert "# TYPE openledger_txpool_pending gauge" in text
    assert "# TYPE openledger_rpc_requests_total counter" in text


def test_the_clock_cli_moves_the_chain_by_durations(fresh_node):
    w3 = client(fresh_node)

    def cli(*args):
        result = subprocess.run([str(BINARY), "time", *args, "--rpc-url", fresh_node.http_url, "--json"],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    before = w3.eth.get_block("latest").timestamp
    moved = cli("advance", "1h 30m")
    assert moved["advancedSeconds"] == 5400 and moved["timestamp"] == before + 5400
    assert w3.eth.get_block("latest").timestamp == before + 5400
    assert cli("show")["date"].startswith(time.strftime("%Y-", time.gmtime(before + 5400)))
    bad = subprocess.run([str(BINARY), "time", "advance", "soon", "--rpc-url", fresh_node.http_url],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert bad.returncode != 0 and "soon" in bad.stderr
