"""Validators rating settled inferences from the command line, on a node of their own (the test
moves its clock): register, commit, reveal, finalize, claim and export; and a harmful majority
that makes the Feedback module propose a slash to the Governor on the real chain."""

import json

from eth_account import Account
from web3 import Web3

from conftest import OPEN, base_tx, send
from test_cli import cli, cli_json
from test_governance import advance
from test_modules import OWNER, OPERATOR, build_market, inference_receipt, module, sign_order, transact


def settle(w3: Web3, market: dict, user, nonce: int, prompt: bytes) -> tuple:
    """Settles one of `user`'s orders; returns the receipt id (the order hash) and its reward."""
    settlement, feedback = module(w3, "ISettlement"), module(w3, "IFeedback")
    order, signed = sign_order(w3, user, market["model"], nonce)
    call = settlement.functions.settle(order, signed.signature, inference_receipt(market, [500_000, 500_000], prompt))
    receipt, _ = transact(w3, call, OPERATOR)
    settled = settlement.events.Settled().process_receipt(receipt)[0].args
    recorded = feedback.events.ReceiptRecorded().process_receipt(receipt)[0].args
    assert recorded.receiptId == settled.orderHash and recorded.promptHash == prompt
    return "0x" + settled.orderHash.hex().removeprefix("0x"), recorded.reward


def test_validators_rate_settled_inferences_and_export_the_accepted_ones(own_node, own_w3, tmp_path):
    w3 = own_w3
    market = build_market(w3, own_node)
    user = Account.create()
    send(w3, {**base_tx(w3, OWNER), "to": user.address, "value": 20 * OPEN, "gas": 21_000,
              "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9})
    transact(w3, module(w3, "ISettlement").functions.deposit(), user.key, value=10 * OPEN)
    plain, reward = settle(w3, market, user, 1, b"\x01" * 32)
    harmful, _ = settle(w3, market, user, 2, b"\x03" * 32)
    assert reward > 0

    state = ["--state-dir", str(tmp_path / "validator")]
    too_little = cli(own_node, "validator", "register", "1", "--account", "0", check=False)
    assert too_little.returncode != 0 and "StakeBelowMinimum" in too_little.stderr
    for n in ("0", "1", "2"):
        cli(own_node, "validator", "register", "10", "--account", n)
    # Scores 80, 75 and 10 on the plain receipt; two of three flag the other one harmful.
    votes = {
        "0": (["--score", "80", "--labels", "helpful,accurate"], ["--score", "5", "--harmful"]),
        "1": (["--score", "75"], ["--score", "10", "--harmful"]),
        "2": (["--score", "10"], ["--score", "60"]),
    }
    for n, (on_plain, on_harmful) in votes.items():
        cli(own_node, "validator", "rate", plain, *on_plain, *state, "--account", n)
        cli(own_node, "validator", "rate", harmful, *on_harmful, *state, "--account", n)
    early = cli(own_node, "validator", "reveal", plain, *state, "--account", "0", check=False)
    assert early.returncode != 0 and "WrongPhase" in early.stderr

    advance(w3, 60)
    for n in votes:
        for receipt in (plain, harmful):
            cli(own_node, "validator", "reveal", receipt, *state, "--account", n)
    forgotten = cli(own_node, "validator", "reveal", plain, "--state-dir", str(tmp_path / "elsewhere"),
                    "--account", "0", check=False)
    assert forgotten.returncode != 0 and "rate the receipt first" in forgotten.stderr
    advance(w3, 60)

    # Equal stakes: the median is 75, so 80 and 75 share the reward and 10 is an outlier.
    done = cli(own_node, "validator", "finalize", plain, "--account", "2").stdout
    assert "median 75, 2 accepted" in done
    shown = cli_json(own_node, "validator", "show", "--receipt", plain)
    assert shown["phase"] == "Finalized" and shown["median"] == 75
    assert [r["score"] for r in shown["ratings"]] == [80, 75, 10]
    mine = cli_json(own_node, "validator", "show", "--account", "0")
    assert int(mine["rewards"]) == reward // 2 and mine["outlierStreak"] == 0
    assert cli_json(own_node, "validator", "show", "--account", "2")["outlierStreak"] == 1
    cli(own_node, "validator", "claim", "--account", "0")
    assert cli_json(own_node, "validator", "show", "--account", "0")["rewards"] == "0"

    # Twenty of thirty OPEN of revealed stake flagged the second output: a slashing proposal.
    flagged = cli(own_node, "validator", "finalize", harmful, "--account", "1")
    assert "slashing proposal" in flagged.stdout
    governor = module(w3, "IGovernor")
    created = governor.events.ProposalCreated().get_logs(from_block=0)
    assert len(created) == 1 and created[0].args.proposer == module(w3, "IFeedback").address
    assert created[0].args.targets == [module(w3, "IStaking").address]
    assert governor.functions.state(created[0].args.proposalId).call() == 0  # Pending

    exported = tmp_path / "preferences.jsonl"
    cli(own_node, "feedback", "export", "--output", str(exported), *state, "--account", "0")
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    plain_rows = [r for r in rows if r["receipt_id"] == plain]
    assert [(r["score"], r["labels"]) for r in plain_rows] == [(80, ["helpful", "accurate"]), (75, [])]
    assert plain_rows[0]["prompt_hash"] == "0x" + "01" * 32
    assert plain_rows[0]["output_hash"] == "0x" + "02" * 32
    assert all(r["model_id"] == str(market["model"]) for r in rows)
