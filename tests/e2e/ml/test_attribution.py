"""Span attribution from the command line: index the generated rows with the base model's
tokenizer, then attribute a contributor's canary fact, a novel sentence and a query tokenized by
another tokenizer."""

import json

from ml_cli import factory, run  # noqa: F401 (factory is a fixture)


def test_a_canary_is_attributed_to_its_contributor(factory, tmp_path):
    data, index = factory["data"], tmp_path / "index"
    run("attribution", "index", "--data", *sorted(data.glob("*.jsonl")), "--tokenizer",
        factory["base"] / "tokenizer.json", "--out", index)
    manifest = json.loads((data / "manifest.json").read_text())
    owner = manifest["contributors"][1]
    canary = owner["canaries"][0]
    result = json.loads(run("attribution", "query", "--index", index, "--text",
                            f"As we know, {canary}", "--json").stdout)
    assert result["weights"][0]["contribution"] == owner["id"]
    assert sum(w["ppm"] for w in result["weights"]) == 1_000_000
    assert all(row["contribution"] == owner["id"] for row in result["spans"][0]["listed"])

    novel = run("attribution", "query", "--index", index, "--text", "Zebras juggle quietly.").stdout
    assert novel.startswith("no attribution")

    other = tmp_path / "other.json"
    run("tokenizer", "train", "--data", sorted(data.glob("*.jsonl"))[0], "--vocab-size", 300,
        "--out", other)
    refused = run("attribution", "query", "--index", index, "--text", canary, "--tokenizer", other,
                  ok=False)
    assert refused.returncode == 1 and "tokenize with the index's tokenizer.json" in refused.stderr
