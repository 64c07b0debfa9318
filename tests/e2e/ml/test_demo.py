"""`openledger demo`: the flywheel on a fresh chain, from generated data to claimed rewards. The
demo reports who earned what from the modules' own events; these tests check what a user of it
would: every wei charged is accounted for, everyone claimed what they earned, the answers were
attributed to the contributors' data, and the chain it leaves behind verifies."""

import json

import pytest

from ml_cli import run

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


def test_the_demo_accounts_for_every_fee_and_leaves_a_valid_chain(base, tmp_path):
    datadir = tmp_path / "chain"
    result = demo(base, datadir)
    report = json.loads(result.stdout)
    assert "[12/12]" in result.stderr, result.stderr

    assert report["inferences"] == 4
    assert report["evalLossAfter"] < report["evalLossBefore"]
    fees, slashed = int(report["fees"]), int(report["slashed"])
    assert fees > 0 and slashed > 0 and report["conserved"]
    assert sum(int(e["earned"]) for e in report["earnings"]) == fees + slashed
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


def test_the_demo_refuses_a_datadir_in_use(base, tmp_path):
    datadir = tmp_path / "used"
    datadir.mkdir()
    (datadir / "notes.txt").write_text("mine")
    refused = demo(base, datadir, ok=False)
    assert refused.returncode != 0
    assert "not empty" in refused.stderr
    assert (datadir / "notes.txt").read_text() == "mine"
