"""The `openledger datanet|model|settle` commands, run as a user runs them against the dev node:
dev-account, raw-key and keystore signing, text and --json output, readable errors."""

import json
import subprocess

from eth_account import Account

from conftest import BINARY, DEV_KEYS, OPEN


def cli(node, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BINARY), *args, "--rpc-url", node.http_url, "--api-url", node.api_url],
        capture_output=True, text=True, timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def cli_json(node, *args: str) -> dict:
    return json.loads(cli(node, *args, "--json").stdout)


def test_a_datanet_is_created_filled_and_curated_from_the_command_line(node, tmp_path):
    created = cli_json(node, "datanet", "create", "--name", "Drug interactions", "--tag", "pharma",
                       "--licence", "CC-BY-4.0", "--account", "0")
    assert created["published"] and int(created["fee"]) > 0
    datanet = created["datanetId"]
    table = tmp_path / "interactions.csv"
    table.write_text('drug,interacts_with\nwarfarin,aspirin\n"ibuprofen, 400mg",lithium\n')
    first = cli_json(node, "datanet", "contribute", datanet, str(table), "--account", "1")
    assert (first["rows"], first["size"]) == (2, len(table.read_bytes()))
    notes = tmp_path / "notes.txt"
    notes.write_text("Grapefruit raises statin levels.\n")
    second = cli_json(node, "datanet", "contribute", datanet, str(notes), "--account", "1")

    approved = cli_json(node, "datanet", "approve", datanet, first["contributionId"], "--account", "0")
    assert approved["version"] == 1 and approved["contributionIds"] == [first["contributionId"]]
    cli(node, "datanet", "reject", datanet, second["contributionId"], "--reason", "3", "--account", "0")

    shown = cli_json(node, "datanet", "show", datanet)
    statuses = {c["id"]: (c["status"], c["reasonCode"]) for c in shown["contributions"]}
    assert statuses == {first["contributionId"]: ("Approved", 0), second["contributionId"]: ("Rejected", 3)}
    assert shown["versions"][0]["root"] == approved["root"]
    assert any(d["name"] == "Drug interactions" for d in cli_json(node, "datanet", "list"))
    text = cli(node, "datanet", "show", datanet).stdout
    assert "Drug interactions" in text and "Rejected" in text

    # Only curators approve: the custom error comes back by name.
    notes.write_text("Alcohol with metronidazole: avoid.\n")
    third = cli_json(node, "datanet", "contribute", datanet, str(notes), "--account", "1")
    refused = cli(node, "datanet", "approve", datanet, third["contributionId"], "--account", "1", check=False)
    assert refused.returncode != 0 and "NotCurator" in refused.stderr
    bad = cli(node, "datanet", "upload", datanet, str(tmp_path / "missing.txt"), check=False)
    assert bad.returncode != 0 and "cannot read" in bad.stderr


def test_models_go_through_their_lifecycle_from_the_command_line(node):
    datanet = cli_json(node, "datanet", "create", "--name", "Tiny", "--account", "0")["datanetId"]
    model = cli_json(node, "model", "propose", "--name", "tiny-lora", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    refused = cli(node, "model", "approve", model, "--account", "2", check=False)
    assert "NotGovernance" in refused.stderr
    cli(node, "model", "approve", model, "--account", "0")
    early = cli(node, "model", "register", model, "--adapter-hash", "0x" + "aa" * 32,
                "--datanet-version", "1", "--account", "2", check=False)
    assert "UnknownVersion" in early.stderr  # the datanet has no version yet
    operator = Account.from_key(DEV_KEYS[1]).address
    out_of_order = cli(node, "model", "deploy", model, "--operator", operator, "--input-rate", "0.002",
                       "--output-rate", "0.006", "--account", "2", check=False)
    assert "WrongStatus" in out_of_order.stderr
    shown = cli_json(node, "model", "show", model)
    assert shown["status"] == "Approved" and shown["datanetIds"] == [datanet]
    listed = cli_json(node, "model", "list")
    assert shown in listed and [m["id"] for m in listed] == sorted((m["id"] for m in listed), key=int)
    assert "tiny-lora" in cli(node, "model", "list").stdout


def test_escrow_with_raw_key_and_keystore_signers(node, tmp_path):
    key = DEV_KEYS[2]
    address = Account.from_key(key).address
    cli(node, "settle", "deposit", "2.5", "--private-key", key)
    keystore = tmp_path / "key.json"
    keystore.write_text(json.dumps(Account.encrypt(key, "correct horse")))
    password = tmp_path / "password"
    password.write_text("correct horse\n")
    signer = ("--keystore", str(keystore), "--password-file", str(password))
    # Escrow leaves in two steps: nothing is unlocked yet, so nothing can be withdrawn.
    early = cli(node, "settle", "withdraw", "1", *signer, check=False)
    assert early.returncode != 0 and "settle unlock" in early.stderr, early.stderr
    unlocked = cli_json(node, "settle", "unlock", "1", *signer)
    assert unlocked["account"].lower() == address.lower()
    assert int(unlocked["escrow"]) == 5 * OPEN // 2  # still in escrow until withdrawn
    waiting = cli(node, "settle", "withdraw", "--private-key", key, check=False)
    assert waiting.returncode != 0 and "can be withdrawn from" in waiting.stderr, waiting.stderr
    shown = cli_json(node, "settle", "rewards", address)
    assert int(shown["unlocking"]) == OPEN and shown["releaseAt"] > 0
    assert "unlocking          1 OPEN" in cli(node, "settle", "rewards", address).stdout
    subprocess.run([str(BINARY), "time", "advance", "1m", "--rpc-url", node.http_url], check=True,
                   capture_output=True, timeout=60)
    # What a deposit or withdrawal prints is the escrow left, beside the wallet.
    withdrawn = cli_json(node, "settle", "withdraw", *signer)  # all that is unlocked
    assert int(withdrawn["escrow"]) == 3 * OPEN // 2
    rewards = cli_json(node, "settle", "rewards", address)
    assert int(rewards["escrow"]) == 3 * OPEN // 2 and int(rewards["unlocking"]) == 0
    deposited = cli(node, "settle", "deposit", "0.5", "--private-key", key).stdout
    assert "now has 2 OPEN in escrow" in deposited, deposited
    cli(node, "settle", "unlock", "0.5", "--private-key", key)
    # A read-only command without a signer or an address says what to give.
    whose = cli(node, "settle", "rewards", check=False)
    assert whose.returncode != 0 and "whose rewards" in whose.stderr
    password.write_text("wrong")
    wrong = cli(node, "settle", "withdraw", "1", "--keystore", str(keystore), "--password-file", str(password),
                check=False)
    assert wrong.returncode != 0 and "cannot decrypt keystore" in wrong.stderr
    nothing = cli(node, "settle", "claim", "--private-key", key, check=False)
    assert "NothingToClaim" in nothing.stderr
    unsigned = cli(node, "settle", "deposit", "1", check=False)
    assert "choose a signer" in unsigned.stderr
    too_much = cli(node, "settle", "unlock", "100", "--private-key", key, check=False)
    assert "InsufficientEscrow" in too_much.stderr
