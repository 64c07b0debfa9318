"""`openledger train --datanet ID@VERSION --model ID`: a model's creator trains on a datanet
version read from the node and registers the adapter on-chain. Checked through web3.py: the model
is Trained on that version with the hash of the adapter file on disk."""

import json
import subprocess

from web3 import Web3

from conftest import BINARY
from test_modules import module

TRAINED = 3  # IModels.Status: None, Proposed, Approved, Trained, ...


def cli(node, *args, check=True):
    result = subprocess.run(
        [str(BINARY), *map(str, args), "--rpc-url", node.http_url, "--api-url", node.api_url],
        capture_output=True, text=True, timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def cli_json(node, *args):
    return json.loads(cli(node, *args, "--json").stdout)


def model_info(w3, model) -> dict:
    """`IModels.getModel` through web3.py, by field name."""
    models = module(w3, "IModels")
    fields = next(f for f in models.abi if f.get("name") == "getModel")["outputs"][0]["components"]
    return dict(zip([f["name"] for f in fields], models.functions.getModel(int(model)).call()))


def tiny_base(root):
    """Generated data as plain-text files, and a tiny base model pre-trained on them."""
    subprocess.run([str(BINARY), "data", "synth", "--contributors", "2", "--rows", "20", "--seed", "3",
                    "--out", str(root / "synth")], check=True, capture_output=True, timeout=120)
    files = []
    for jsonl in sorted((root / "synth").glob("*.jsonl")):
        rows = [json.loads(line)["text"] for line in jsonl.read_text().splitlines()]
        txt = root / f"{jsonl.stem}.txt"
        txt.write_text("\n\n".join(rows) + "\n")
        files.append(txt)
    subprocess.run([str(BINARY), "model", "pretrain", "--out", str(root / "base"), "--data",
                    *map(str, sorted((root / "synth").glob("*.jsonl"))), "--hidden", "32", "--layers", "1",
                    "--heads", "2", "--kv-heads", "1", "--vocab-size", "300", "--epochs", "1",
                    "--context", "64"], check=True, capture_output=True, timeout=300)
    return root / "base", files


def test_a_creator_trains_on_a_datanet_version_and_registers_the_adapter(own_node, own_w3, tmp_path):
    node, w3 = own_node, own_w3
    base, files = tiny_base(tmp_path)
    datanet = cli_json(node, "datanet", "create", "--name", "Ward notes", "--account", "0")["datanetId"]
    contributions = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n + 3))
                     for n, f in enumerate(files)]
    ids = [c["contributionId"] for c in contributions]
    cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
    model = cli_json(node, "model", "propose", "--name", "ward-lora", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    cli(node, "model", "approve", model, "--account", "0")

    adapter = tmp_path / "adapter"
    train = ["train", "--base", base, "--datanet", f"{datanet}@1", "--out", adapter, "--rank", "4",
             "--targets", "q,v", "--epochs", "1", "--context", "64", "--influence-dims", "16"]
    # Only the model's creator registers its artifact; nothing is recorded otherwise.
    refused = cli(node, *train, "--model", model, "--account", "1", check=False)
    assert refused.returncode != 0 and "NotCreator" in refused.stderr, refused.stderr
    out = cli(node, *train, "--model", model, "--account", "2").stdout
    assert f"as model {model}'s artifact" in out

    rows = [json.loads(line) for line in (adapter / "datanet-rows.jsonl").read_text().splitlines()]
    assert len(rows) == sum(c["rows"] for c in contributions)
    assert {r["contributor"] for r in rows} == set(ids)
    trained_on = json.loads((adapter / "rows.json").read_text())
    assert {r["contributor"] for r in trained_on} == set(ids)
    assert (adapter / "influence.bin").is_file()

    info = model_info(w3, model)
    assert info["status"] == TRAINED and info["datanetVersions"] == [1]
    assert info["adapterHash"] == Web3.keccak((adapter / "adapter_model.safetensors").read_bytes())

    missing = cli(node, "train", "--base", base, "--datanet", f"{datanet}@7", "--out", tmp_path / "x",
                  check=False)
    assert missing.returncode != 0 and f"datanet {datanet}@7" in missing.stderr, missing.stderr


def test_a_version_covers_every_contribution_approved_up_to_it(own_node, own_w3, tmp_path):
    """Two approval rounds: training on version 2 reads the rows of both, as IDatanets defines a
    version, not version 2's round alone."""
    node = own_node
    base, files = tiny_base(tmp_path)
    datanet = cli_json(node, "datanet", "create", "--name", "Rounds", "--account", "0")["datanetId"]
    first, second = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n + 3))
                     for n, f in enumerate(files)]
    cli(node, "datanet", "approve", datanet, first["contributionId"], "--account", "0")
    cli(node, "datanet", "approve", datanet, second["contributionId"], "--account", "0")
    model = cli_json(node, "model", "propose", "--name", "rounds-lora", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    cli(node, "model", "approve", model, "--account", "0")
    train = ["train", "--base", base, "--rank", "2", "--targets", "q", "--epochs", "1", "--context", "64"]
    # A datanet the model does not learn from is refused before any training.
    other = cli_json(node, "datanet", "create", "--name", "Other", "--account", "0")["datanetId"]
    refused = cli(node, *train, "--datanet", f"{datanet}@2", "--datanet", f"{other}@1", "--out",
                  tmp_path / "x", "--model", model, "--account", "2", check=False)
    assert refused.returncode != 0 and "not one of model" in refused.stderr, refused.stderr
    assert not (tmp_path / "x" / "adapter_model.safetensors").exists()
    # Versions 1 and 2 are version 2: its rows once each, and version 2 registered.
    out = tmp_path / "v2"
    cli(node, *train, "--datanet", f"{datanet}@1", "--datanet", f"{datanet}@2", "--out", out,
        "--model", model, "--account", "2")
    rows = [json.loads(line) for line in (out / "datanet-rows.jsonl").read_text().splitlines()]
    assert len(rows) == first["rows"] + second["rows"]
    assert {r["contributor"] for r in rows} == {first["contributionId"], second["contributionId"]}
    assert model_info(own_w3, model)["datanetVersions"] == [2]


def test_jsonl_rows_are_trained_on_as_their_text(own_node, tmp_path):
    """A JSONL contribution's rows are read by the README's rule: a record's `text` field, an
    instruction record's parts, not the raw JSON line."""
    node = own_node
    base, _ = tiny_base(tmp_path)
    records = [{"id": "r1", "text": "Aspirin thins the blood."},
               {"instruction": "Name a fever drug.", "input": "", "output": "Paracetamol."}]
    data = tmp_path / "notes.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    datanet = cli_json(node, "datanet", "create", "--name", "JSONL", "--account", "0")["datanetId"]
    contribution = cli_json(node, "datanet", "contribute", datanet, data, "--account", "3")
    cli(node, "datanet", "approve", datanet, contribution["contributionId"], "--account", "0")
    out = tmp_path / "jsonl"
    cli(node, "train", "--base", base, "--datanet", f"{datanet}@1", "--out", out, "--rank", "2",
        "--targets", "q", "--epochs", "1", "--context", "64")
    rows = [json.loads(line)["text"] for line in (out / "datanet-rows.jsonl").read_text().splitlines()]
    assert rows == ["Aspirin thins the blood.", "Name a fever drug.\n\nParacetamol."]
