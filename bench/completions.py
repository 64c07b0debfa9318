"""Completions through `openledger dev`: how many calls to its own chain the node makes per
completion (read from its /metrics: JSON-RPC requests received, and the services' in-process
calls), and completions a second with 16 concurrent clients, on the dev base model with a LoRA
adapter trained by a job.

Run from the repository root with the end-to-end environment (see docs/BENCHMARKS.md):

    OPENLEDGER_BIN=target/release/openledger target/e2e-venv/bin/python bench/completions.py
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e" / "web3py"))

from conftest import BINARY, Node, client  # noqa: E402
from test_flywheel import key, wait_for  # noqa: E402
from test_inference import deploy, openai_client  # noqa: E402
from test_jobs import cli, cli_json  # noqa: E402

CLIENTS = 16
COMPLETIONS = 96
MAX_TOKENS = 16
PAYERS = range(5, 10)


COUNTERS = ("openledger_rpc_requests_total", "openledger_services_chain_calls_total")


def metrics(node) -> dict:
    text = requests.get(f"{node.api_url}/metrics", timeout=30).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(COUNTERS)}


def trained_model(node, work: Path) -> int:
    import subprocess
    subprocess.run([str(BINARY), "data", "synth", "--contributors", "2", "--rows", "20", "--seed", "3",
                    "--out", str(work)], check=True, capture_output=True, timeout=120)
    datanet = cli_json(node, "datanet", "create", "--name", "Bench notes", "--account", "0")["datanetId"]
    ids = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n + 3))["contributionId"]
           for n, f in enumerate(sorted(work.glob("*.jsonl")))]
    cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
    model = int(cli_json(node, "model", "propose", "--name", "bench", "--base-model", "dev",
                         "--datanet", datanet, "--account", "2")["modelId"])
    cli(node, "model", "approve", model, "--account", "0")
    job = {"model": model, "datanets": [f"{datanet}@1"], "epochs": 1}
    accepted = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(2), timeout=30).json()
    done = wait_for(f"{node.api_url}/jobs/{accepted['id']}", lambda b: b["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    return model


def main():
    import tempfile
    node = Node()
    try:
        w3 = client(node)
        with tempfile.TemporaryDirectory() as work:
            model = trained_model(node, Path(work))
        deploy(node, w3, model)
        for payer in PAYERS:
            cli(node, "settle", "deposit", "100", "--account", str(payer))
        ask = lambda n: openai_client(node, f"dev-{PAYERS[n % len(PAYERS)]}").completions.create(  # noqa: E731
            model=f"model-{model}", prompt="The patient", max_tokens=MAX_TOKENS, temperature=0)
        ask(0)
        time.sleep(1)
        before = metrics(node)
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(ask, range(COMPLETIONS)))
        elapsed = time.monotonic() - started
        assert all(a.model_dump()["openledger"]["settlementTx"] for a in answers)
        time.sleep(1)
        after = metrics(node)
        print(f"{COMPLETIONS} completions of {MAX_TOKENS} tokens, {CLIENTS} clients: "
              f"{COMPLETIONS / elapsed:.1f} completions/s ({elapsed:.1f} s)")
        for counter in COUNTERS:
            print(f"{counter}:")
            total = 0.0
            for name in sorted(n for n in after if n.startswith(counter)):
                per = (after[name] - before.get(name, 0)) / COMPLETIONS
                if per > 0:
                    total += per
                    method = name.split('"')[1]
                    print(f"  {method:<28} {per:6.2f} per completion")
            print(f"  {'all':<28} {total:6.2f} per completion")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
