"""Starts a fresh `openledger dev` node for the end-to-end tests and stops it afterwards."""

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("OPENLEDGER_BIN", ROOT / "target" / "debug" / "openledger"))
ARTIFACTS = Path(os.environ.get("OPENLEDGER_CONTRACTS", ROOT / "target" / "e2e" / "contracts.json"))

# The first keys of the standard test mnemonic; `openledger dev` funds them.
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]


OPEN = 10**18
TIMEOUT = 30


def send(w3: Web3, tx: dict, key: str = DEV_KEYS[0]):
    """Signs `tx` with `key`, sends it and waits for its receipt."""
    signed = Account.sign_transaction(tx, key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)


def base_tx(w3: Web3, key: str = DEV_KEYS[0]) -> dict:
    """The chain id and next nonce of `key`'s account."""
    sender = Account.from_key(key).address
    return {"chainId": w3.eth.chain_id, "nonce": w3.eth.get_transaction_count(sender, "pending")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A running dev node on a free port with its own data directory."""

    def __init__(self, block_time: str = "0", extra_args: tuple = ()):
        self.datadir = tempfile.TemporaryDirectory(prefix="openledger-e2e-")
        self.port = free_port()
        self.api_port = free_port()
        self.log = open(Path(self.datadir.name) / "node.log", "w")
        self.proc = subprocess.Popen(
            [str(BINARY), "dev", "--datadir", self.datadir.name, "--rpc-addr", f"127.0.0.1:{self.port}",
             "--api-addr", f"127.0.0.1:{self.api_port}", "--max-upload-mib", "1",
             "--block-time", block_time, *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        w3 = Web3(Web3.HTTPProvider(self.http_url, request_kwargs={"timeout": 10}))
        deadline = time.monotonic() + 60
        while True:
            try:
                w3.eth.chain_id
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"node did not start; log:\n{self.read_log()}")
                time.sleep(0.1)

    def read_log(self) -> str:
        self.log.flush()
        return (Path(self.datadir.name) / "node.log").read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.datadir.cleanup()


def client(node: Node) -> Web3:
    return Web3(Web3.HTTPProvider(node.http_url, request_kwargs={"timeout": 30}))


def running_node():
    n = Node()
    yield n
    n.stop()


# The node the whole session shares, and a node for one test module alone, for tests that move
# the chain's clock or its accounts.
node = pytest.fixture(running_node, scope="session", name="node")
own_node = pytest.fixture(running_node, scope="module", name="own_node")


@pytest.fixture(scope="session")
def w3(node) -> Web3:
    return client(node)


@pytest.fixture(scope="module")
def own_w3(own_node) -> Web3:
    return client(own_node)


@pytest.fixture(scope="session")
def artifacts() -> dict:
    return json.loads(ARTIFACTS.read_text())
