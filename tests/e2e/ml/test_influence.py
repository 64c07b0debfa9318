"""Gradient influence from the command line: `openledger train` records the training rows'
gradients next to the adapter, `openledger attribution influence` scores a text against them, and
`openledger attribution eval` measures both attribution engines on generated data."""

import json
import os
import shutil
import subprocess

from ml_cli import BIN, factory, run  # noqa: F401 (factory is a fixture)


def influence(factory, adapter, text, ok=True):
    return run("attribution", "influence", "--base", factory["base"], "--adapter", adapter,
               "--text", text, "--json", ok=ok)


def test_a_training_row_is_among_its_own_most_influential_and_answers_repeat(factory):
    adapter = factory["adapter"]
    assert (adapter / "influence.bin").is_file()
    rows = json.loads((adapter / "rows.json").read_text())
    train = [r for r in rows if r["split"] == "train"]
    row = train[0]
    owner_file = factory["data"] / f"{row['contributor']}.jsonl"
    text = next(json.loads(line)["text"] for line in owner_file.read_text().splitlines()
                if json.loads(line)["id"] == row["id"])
    first = influence(factory, adapter, text).stdout
    result = json.loads(first)
    assert sum(w["ppm"] for w in result["weights"]) == 1_000_000
    assert sum(w["ppm"] for w in result["tracin_weights"]) == 1_000_000
    trained_on = {r["contributor"] for r in train}
    assert {w["contribution"] for w in result["weights"]} <= trained_on
    listed = [r["row"] for r in result["top_rows"]]
    assert row["id"] in listed, listed
    assert influence(factory, adapter, text).stdout == first
    one_thread = subprocess.run(
        [BIN, "attribution", "influence", "--base", factory["base"], "--adapter", adapter, "--text",
         text, "--json"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "RAYON_NUM_THREADS": "1"})
    assert one_thread.returncode == 0 and one_thread.stdout == first


def test_missing_damaged_or_stale_gradients_are_refused(factory, tmp_path):
    copy = tmp_path / "adapter"
    shutil.copytree(factory["adapter"], copy)
    store = copy / "influence.bin"
    good = store.read_bytes()

    store.write_bytes(good[:-7])
    refused = influence(factory, copy, "anything", ok=False)
    assert refused.returncode == 1 and "checksum mismatch" in refused.stderr

    store.unlink()
    refused = influence(factory, copy, "anything", ok=False)
    assert refused.returncode == 1 and "has no influence.bin" in refused.stderr

    store.write_bytes(good)
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    refused = influence(factory, copy, "anything", ok=False)
    assert refused.returncode == 1 and "other adapter weights" in refused.stderr


def test_the_quality_harness_reports_both_engines(factory):
    # This base's 320-token vocabulary makes 8-token spans two or three words long, short enough
    # to match the fact templates alone; 24 keeps spans to whole clauses, as 8 do on the dev model.
    report = json.loads(run("attribution", "eval", "--base", factory["base"], "--contributors", 3,
                            "--rows", 16, "--subsets", 2, "--epochs", 1, "--context", 64,
                            "--min-len", 24, "--json").stdout)
    span, gradient = report["span"], report["gradient"]
    assert report["noisy_contributor"] == "c02"
    assert 6 <= span["facts"] <= 12 and span["top1_accuracy"] >= 0.95
    assert span["false_attribution_rate"] <= 0.05
    assert gradient["rows"] == 48
    assert 0.0 <= gradient["noisy_auroc_datainf"] <= 1.0
    assert set(gradient["lds"]) == {"datainf", "tracin", "bm25", "random"}
    assert all(-1.0 <= v <= 1.0 for v in gradient["lds"].values())
