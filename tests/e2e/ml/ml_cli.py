"""What the ModelFactory tests share: running the binary, and a fixture that generates data,
pre-trains a base model and fine-tunes a LoRA adapter from the command line (once per test module
that imports it). Not named conftest.py: the web3py tests import their own conftest by name."""

import json
import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import pytest

BIN = os.environ.get("OPENLEDGER_BIN", "target/debug/openledger")
HIDDEN, LAYERS, HEADS, KV_HEADS = 32, 2, 4, 2


def run(*args, ok=True):
    result = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(*args, env=None, timeout=120):
    """`openledger serve` with `args` on a free port, for the length of the block: yields its URL
    once `/v1/models` answers."""
    port = free_port()
    proc = subprocess.Popen([BIN, "serve", *map(str, args), "--api-addr", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    root = tmp_path_factory.mktemp("factory")
    data, base, adapter = root / "data", root / "base", root / "adapter"
    run("data", "synth", "--domain", "legal", "--contributors", 3, "--rows", 40, "--seed", 4, "--out", data)
    files = sorted(data.glob("*.jsonl"))
    run("model", "pretrain", "--out", base, "--data", *files, "--hidden", HIDDEN, "--layers", LAYERS,
        "--heads", HEADS, "--kv-heads", KV_HEADS, "--vocab-size", 320, "--epochs", 1, "--context", 64)
    metrics = json.loads(run("train", "--base", base, "--data", *files[:2], "--out", adapter, "--rank", 4,
                             "--alpha", 8, "--targets", "q,v,down", "--lr", 1e-2, "--epochs", 2,
                             "--context", 64, "--json").stdout)
    return {"data": data, "base": base, "adapter": adapter, "metrics": metrics}
