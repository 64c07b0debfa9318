"""Span attribution from the command line: index the generated rows with the base model's
tokenizer, then attribute a contributor's canary fact, a novel sentence and a query tokenized by
another tokenizer; an index split into shards answers as one suffix array does."""

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


def test_a_sharded_index_attributes_as_one_suffix_array(factory, tmp_path):
    files = sorted(factory["data"].glob("*.jsonl"))
    tokenizer = factory["base"] / "tokenizer.json"
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    run("attribution", "index", "--data", *files, "--tokenizer", tokenizer, "--out", whole)
    out = run("attribution", "index", "--data", *files, "--tokenizer", tokenizer, "--out", sharded,
              "--shard-tokens", 1000).stdout
    shards = json.loads((sharded / "shards.json").read_text())["shards"]
    assert shards > 2 and f"{shards} shards" in out
    manifest = json.loads((factory["data"] / "manifest.json").read_text())
    for contributor in manifest["contributors"]:
        text = f"{contributor['facts'][0]['text']} {contributor['canaries'][0]}"
        answers = [run("attribution", "query", "--index", index, "--text", text, "--json").stdout
                   for index in (whole, sharded)]
        assert answers[0] == answers[1]
        assert json.loads(answers[0])["weights"][0]["contribution"] == contributor["id"]
