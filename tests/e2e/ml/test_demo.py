"""`openledger demo`: the flywheel on a fresh chain, from generated data to claimed rewards. The
demo reports who earned what from the modules' own events; these tests check what a user of it
would: every wei charged is accounted for, everyone claimed what they earned, the answers were
attributed to the contributors' data, and the chain it leaves behind verifies."""

import json
import socket
import subprocess
import time

import pytest
import requests

from ml_cli import BIN, run

CONTRIBUTORS, ROWS, SEED = 2, 30, 1


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small base model pre-trained on the demo's own generated corpus (the same options write
    the same bytes), so that its answers can repeat the data in seconds rather than the minutes
    the dev base model takes to build."""
    root = tmp_path_factory.mktemp("demo")
    run("data", "synth", "--domain", "medical", "--contributors", CONTRIBUTORS, "--rows", ROWS,
        "--seed", SEED, "--out", root / "data")
    run("model", "pretrain", "--out", root / "base", "--data", *sorted((root / "data").glob("*.jsonl")),
        "--hidden", 64, "--layers", 2, "--heads", 4, "--kv-heads", 2, "--vocab-size", 512,
        "--epochs", 20, "--context", 64, "--lr", 1e-2)
    return root / "base"


def demo(base, datadir, *extra, ok=True):
    return run("demo", "--base", base, "--datadir", datadir, "--contributors", CONTRIBUTORS,
               "--rows", ROWS, "--seed", SEED, "--inferences", 4, "--epochs", 4, "--json", *extra,
               ok=ok)


@pytest.fixture(scope="module")
def demoed(base, tmp_path_factory):
    """One demo run: its data directory, its JSON report and its progress."""
    datadir = tmp_path_factory.mktemp("demoed") / "chain"
    result = demo(base, datadir)
    return datadir, json.loads(result.stdout), result.stderr


def test_the_demo_accounts_for_every_fee_and_leaves_a_valid_chain(demoed):
    datadir, report, progress = demoed
    assert "[12/12]" in progress, progress

    assert report["inferences"] == 4
    assert report["evalLossAfter"] < report["evalLossBefore"]
    fees, slashed = int(report["fees"]), int(report["slashed"])
    assert fees > 0 and slashed > 0 and report["conserved"]
    assert sum(int(e["earned"]) for e in report["earnings"]) == fees + slashed
    # Training paid too: the contributors for their rows, the operator for the compute.
    access, compute = int(report["accessFee"]), int(report["computeFee"])
    assert access > 0 and compute > 0
    assert fees == int(report["inferenceFees"]) + access + compute
    trained_on = {e["who"] for e in report["earnings"] if e["role"] == "training on their rows"}
    assert trained_on == {"contributor 1", "contributor 2"}
    assert any(e["who"] == "operator" and int(e["earned"]) == compute for e in report["earnings"])
    earners = {e["who"] for e in report["earnings"]}
    assert {"model creator", "staker", "treasury", "validator 1", "validator 2", "challenger"} <= earners
    for claim in report["claims"]:
        assert claim["claimed"] == claim["earned"], claim

    assert report["attributed"] >= 1
    evidence = report["evidence"]
    assert sum(w["ppm"] for w in evidence["weights"]) == 1_000_000
    assert {w["contributor"] for w in evidence["weights"]} <= {"contributor 1", "contributor 2"}
    paid = {e["who"] for e in report["earnings"]
            if e["role"] in ("data contributions", "re-settled from the slash")}
    assert {w["contributor"] for w in evidence["weights"]} <= paid

    # The operator settled the first attributed answer with all its weight elsewhere; the
    # challenge recomputed the attribution, slashed the operator and re-paid the contributors
    # the evidence names, from the slash.
    challenge = report["challenge"]
    assert challenge["upheld"] and challenge["settledWeightsHash"] != challenge["recomputedWeightsHash"]
    assert challenge["settledTo"] not in {w["contributor"] for w in evidence["weights"]}
    assert {r["who"] for r in challenge["repaid"]} == {w["contributor"] for w in evidence["weights"]}
    moved = sum(int(challenge[k]) for k in ("toContributors", "toChallenger", "toTreasury"))
    assert int(challenge["slashed"]) == moved == slashed
    assert any(e["who"] == "challenger" and int(e["earned"]) > 0 for e in report["earnings"])

    verified = run("db", "verify", "--datadir", datadir).stdout
    assert verified.splitlines()[-1] == "ok", verified
    head = int(verified.split()[2].rstrip(":"))
    assert head > 40, verified  # a block per transaction: every step went through the chain


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_ran_on_the_nodes_services_which_dev_takes_over(base, demoed):
    """The demo trains, attributes and settles through the node's own services: `openledger dev`
    on its data directory shows the training job and the answers' settlements, and serves the
    deployed model, answering the demo's prompt as the demo's answer."""
    datadir, report, _ = demoed
    rpc, api = free_port(), free_port()
    node = subprocess.Popen([BIN, "dev", "--datadir", datadir, "--base", base, "--rpc-addr", f"127.0.0.1:{rpc}",
                             "--api-addr", f"127.0.0.1:{api}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{api}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                jobs = requests.get(f"{url}/jobs", timeout=5).json()
                break
            except requests.ConnectionError:
                assert node.poll() is None and time.monotonic() < deadline, "dev did not start"
                time.sleep(0.1)
        assert [(j["id"], j["status"], j["trainRows"]) for j in jobs] == \
            [(report["trainingJob"], "succeeded", report["trainRows"])]
        assert len(report["receiptIds"]) == report["inferences"]
        for receipt in report["receiptIds"]:
            state = requests.get(f"{url}/settlements/{receipt}", timeout=30).json()["state"]
            assert state in ("settled", "verified"), (receipt, state)

        evidence = report["evidence"]
        answer = requests.post(f"{url}/v1/completions", headers={"Authorization": "Bearer dev-4"}, timeout=120,
                               json={"model": "model-1", "prompt": evidence["prompt"], "max_tokens": 24,
                                     "temperature": 0, "stop": ["\n"], "seed": SEED}).json()
        assert answer["choices"][0]["text"] == evidence["output"], answer
        assert int(answer["openledger"]["fee"]) > 0 and answer["openledger"]["attribution"]["method"] == "span"
    finally:
        node.terminate()
        node.wait(timeout=30)


def test_the_demo_refuses_a_datadir_in_use(base, tmp_path):
    datadir = tmp_path / "used"
    datadir.mkdir()
    (datadir / "notes.txt").write_text("mine")
    refused = demo(base, datadir, ok=False)
    assert refused.returncode != 0
    assert "not empty" in refused.stderr
    assert (datadir / "notes.txt").read_text() == "mine"
