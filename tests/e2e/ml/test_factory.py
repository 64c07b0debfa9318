"""The ModelFactory from the command line: generate data, pre-train a base model, fine-tune a LoRA
adapter and generate with it, then read the files back with Hugging Face's own safetensors package
to check that they are in the Hugging Face checkpoint and PEFT formats."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from ml_cli import HEADS, HIDDEN, KV_HEADS, LAYERS, factory, run  # noqa: F401 (factory is a fixture)


def test_synth_writes_a_file_per_contributor_and_a_manifest(factory):
    manifest = json.loads((factory["data"] / "manifest.json").read_text())
    assert [c["id"] for c in manifest["contributors"]] == ["c00", "c01", "c02"]
    rows = [json.loads(l) for l in (factory["data"] / "c01.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(r["contributor"] == "c01" for r in rows)
    canary = manifest["contributors"][1]["canaries"][0]
    assert any(canary in r["text"] for r in rows)


def test_the_base_checkpoint_is_a_hugging_face_llama(factory):
    config = json.loads((factory["base"] / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] == KV_HEADS and config["tie_word_embeddings"] is True
    with safe_open(factory["base"] / "model.safetensors", framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
        assert f.get_tensor("model.embed_tokens.weight").shape == (config["vocab_size"], HIDDEN)
        kv_dim = KV_HEADS * HIDDEN // HEADS
        assert f.get_tensor("model.layers.1.self_attn.k_proj.weight").shape == (kv_dim, HIDDEN)
        assert f.get_tensor("model.layers.0.mlp.down_proj.weight").dtype == np.float32
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{name}.weight" for i in range(LAYERS) for name in [
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]}
    assert keys == expected
    assert json.loads((factory["base"] / "tokenizer.json").read_text())["model"]["type"] == "BPE"


def test_the_adapter_has_peft_key_names_shapes_and_config(factory):
    adapter = factory["adapter"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["bias"]) == (4, 8.0, "none")
    assert sorted(config["target_modules"]) == ["down_proj", "q_proj", "v_proj"]
    assert config["fan_in_fan_out"] is False and config["use_dora"] is False and config["use_rslora"] is False
    pattern = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
    intermediate = json.loads((factory["base"] / "config.json").read_text())["intermediate_size"]
    kv_dim = KV_HEADS * HIDDEN // HEADS
    with safe_open(adapter / "adapter_model.safetensors", framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        keys = sorted(f.keys())
        assert len(keys) == LAYERS * 3 * 2
        for key in keys:
            layer, block, module, ab = pattern.match(key).groups()
            assert block == ("mlp" if module == "down_proj" else "self_attn")
            out_dim, in_dim = {"q_proj": (HIDDEN, HIDDEN), "v_proj": (kv_dim, HIDDEN),
                               "down_proj": (HIDDEN, intermediate)}[module]
            shape = f.get_tensor(key).shape
            assert shape == ((4, in_dim) if ab == "A" else (out_dim, 4)), key
        assert np.abs(f.get_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")).sum() > 0


def test_training_reports_held_out_loss_and_writes_its_curve_and_rows(factory):
    metrics = factory["metrics"]
    assert metrics["kind"] == "lora" and metrics["eval_after"]["loss"] < metrics["eval_before"]["loss"]
    assert metrics["run"]["steps"] == len(metrics["run"]["curve"]) > 0
    assert metrics["trainable_parameters"] < metrics["total_parameters"]
    assert "<polyline" in (factory["adapter"] / "loss_curve.svg").read_text()
    rows = json.loads((factory["adapter"] / "rows.json").read_text())
    assert {r["contributor"] for r in rows} == {"c00", "c01"} and {r["split"] for r in rows} == {"train", "eval"}


def test_generation_is_repeatable_under_a_seed_and_respects_max_tokens(factory):
    args = ["generate", "--base", factory["base"], "--adapter", factory["adapter"], "--prompt", "Under the",
            "--max-tokens", 12, "--temperature", 0.9, "--seed", 7, "--json"]
    first, second = (json.loads(run(*args).stdout) for _ in range(2))
    assert first == second
    assert len(first["tokens"]) <= 12 and first["finish_reason"] in ("stop", "length")
    streamed = run(*args[:-1]).stdout
    assert streamed == first["text"] + "\n"


def test_bad_input_fails_with_a_clear_error_and_writes_nothing(factory, tmp_path):
    files = sorted(factory["data"].glob("*.jsonl"))
    out = tmp_path / "never"
    result = run("train", "--base", tmp_path / "missing", "--data", files[0], "--out", out, ok=False)
    assert result.returncode == 1 and "missing: no such file or directory" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run("train", "--base", tmp_path / "empty", "--data", files[0], "--out", out, ok=False)
    assert result.returncode == 1 and "config.json: missing" in result.stderr
    assert not out.exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ["config.json", "tokenizer.json"]:
        (broken / name).write_bytes((factory["base"] / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": truncated")
    result = run("train", "--base", broken, "--data", files[0], "--out", out, ok=False)
    assert "not a valid safetensors file" in result.stderr and not out.exists()

    result = run("train", "--base", factory["base"], "--data", files[0], "--out", out, "--targets", "q,zz", ok=False)
    assert "unknown LoRA target zz_proj" in result.stderr

    wider = tmp_path / "wider"
    run("model", "pretrain", "--out", wider, "--data", files[0], "--hidden", 64, "--layers", LAYERS,
        "--heads", HEADS, "--kv-heads", KV_HEADS, "--vocab-size", 300, "--max-steps", 1)
    result = run("generate", "--base", wider, "--adapter", factory["adapter"], "--prompt", "x", ok=False)
    assert "has shape [4, 32], expected [4, 64]" in result.stderr
