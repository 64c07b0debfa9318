"""Crash safety: SIGKILL the node at random moments while transactions flow, restart it on the same
data directory each time, and check that no receipt it ever served is lost and that the state root
recomputed from scratch (`openledger db verify`) matches the stored one after every crash."""

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from eth_account import Account
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web3py"))
from conftest import BINARY, DEV_KEYS, free_port  # noqa: E402

KILLS = int(os.environ.get("OPENLEDGER_CRASH_KILLS", "24"))
SEED = int(os.environ.get("OPENLEDGER_CRASH_SEED", "1612"))


def start(datadir: str, port: int) -> tuple[subprocess.Popen, Web3]:
    log = open(Path(datadir) / "node.log", "a")
    proc = subprocess.Popen(
        [str(BINARY), "dev", "--datadir", datadir, "--rpc-addr", f"127.0.0.1:{port}", "--api-addr", "127.0.0.1:0",
         "--block-time", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 5}))
    deadline = time.monotonic() + 60
    while True:
        try:
            w3.eth.block_number
            return proc, w3
        except Exception:
            assert proc.poll() is None, (Path(datadir) / "node.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "node did not come up"
            time.sleep(0.05)


def verify(datadir: str):
    result = subprocess.run([str(BINARY), "db", "verify", "--datadir", datadir],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def flow(w3: Web3, key: str, served: dict, lock: threading.Lock, stop: threading.Event):
    """Sends transfers and records every receipt the node serves, until the node dies."""
    account = Account.from_key(key)
    chain_id = w3.eth.chain_id
    while not stop.is_set():
        try:
            nonce = w3.eth.get_transaction_count(account.address, "pending")
            tx = {"chainId": chain_id, "nonce": nonce, "to": Account.create().address, "value": 1 + nonce,
                  "gas": 21000, "gasPrice": w3.eth.gas_price * 2}
            tx_hash = w3.eth.send_raw_transaction(Account.sign_transaction(tx, key).raw_transaction)
            for _ in range(200):
                receipt = w3.eth.get_transaction_receipt(tx_hash) if _has_receipt(w3, tx_hash) else None
                if receipt is not None:
                    with lock:
                        served[tx_hash] = (receipt.blockNumber, receipt.blockHash)
                    break
                time.sleep(0.005)
        except Exception:
            return  # the node was killed


def _has_receipt(w3: Web3, tx_hash) -> bool:
    return w3.provider.make_request("eth_getTransactionReceipt", [tx_hash.hex()]).get("result") is not None


def test_sigkill_never_loses_a_served_receipt_and_state_stays_consistent():
    rng = random.Random(SEED)
    served: dict = {}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="openledger-crash-") as datadir:
        port = free_port()
        for round_no in range(KILLS):
            proc, w3 = start(datadir, port)
            for tx_hash, (number, block_hash) in served.items():
                receipt = w3.eth.get_transaction_receipt(tx_hash)
                assert receipt is not None, f"round {round_no}: receipt of {tx_hash.hex()} lost"
                assert (receipt.blockNumber, receipt.blockHash) == (number, block_hash)
            stop = threading.Event()
            senders = [threading.Thread(target=flow, args=(w3, key, served, lock, stop)) for key in DEV_KEYS[:2]]
            for t in senders:
                t.start()
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            for t in senders:
                t.join(timeout=30)
            verify(datadir)
        proc, w3 = start(datadir, port)
        try:
            lost = [h.hex() for h in served if w3.eth.get_transaction_receipt(h) is None]
            assert not lost, f"receipts lost: {lost}"
            assert len(served) > KILLS, f"too few transactions flowed ({len(served)})"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert "ok" in verify(datadir)
