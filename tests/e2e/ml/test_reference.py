"""The engine computes what Hugging Face's Llama and PEFT compute: a from-the-paper numpy
implementation of the Llama forward pass (RMSNorm, rotate-half RoPE, grouped-query attention with
`repeat_kv`, SwiGLU, tied embeddings) and of a PEFT LoRA update reads the checkpoint and the adapter
with the `safetensors` package, tokenizes with Hugging Face's `tokenizers`, decodes greedily, and
must choose the tokens `openledger generate --temperature 0` chooses."""

import json

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from ml_cli import factory, run  # noqa: F401 (factory is a fixture)

PROMPT, MAX_TOKENS = "Under the", 12


def rms_norm(x, weight, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], -1)


def load_lora(adapter):
    """PEFT's `lora_A`/`lora_B` per target module, scaled by `lora_alpha / r`."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    prefix, scale = "base_model.model.", config["lora_alpha"] / config["r"]
    return {
        name[len(prefix):-len(".lora_A.weight")]: (a.astype(np.float64),
                                                    tensors[name.replace("lora_A", "lora_B")].astype(np.float64),
                                                    scale)
        for name, a in tensors.items() if name.endswith(".lora_A.weight")
    }


def logits(weights, config, ids, lora):
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads, eps = config["num_key_value_heads"], config["rms_norm_eps"]
    dim, seq = hidden // heads, len(ids)

    def linear(name, x):
        y = x @ weights[name + ".weight"].T
        if name + ".bias" in weights:
            y = y + weights[name + ".bias"]
        if name in lora:
            a, b, scale = lora[name]
            y = y + scale * (x @ a.T) @ b.T
        return y

    inv_freq = 1.0 / config["rope_theta"] ** (np.arange(0, dim, 2) / dim)
    angles = np.outer(np.arange(seq), inv_freq)
    angles = np.concatenate([angles, angles], -1)
    cos, sin = np.cos(angles), np.sin(angles)
    mask = np.triu(np.full((seq, seq), -np.inf), 1)

    def heads_of(x, n):
        return x.reshape(seq, n, dim).transpose(1, 0, 2)

    x = weights["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, weights[p + "input_layernorm.weight"], eps)
        q = heads_of(linear(p + "self_attn.q_proj", h), heads)
        k = heads_of(linear(p + "self_attn.k_proj", h), kv_heads)
        v = heads_of(linear(p + "self_attn.v_proj", h), kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, heads // kv_heads, axis=0), np.repeat(v, heads // kv_heads, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(dim) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + linear(p + "self_attn.o_proj", (probs @ v).transpose(1, 0, 2).reshape(seq, hidden))
        h = rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps)
        gate, up = linear(p + "mlp.gate_proj", h), linear(p + "mlp.up_proj", h)
        x = x + linear(p + "mlp.down_proj", gate / (1 + np.exp(-gate)) * up)
    x = rms_norm(x[-1], weights["model.norm.weight"], eps)
    head = weights["model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"]
    return x @ head.T


def greedy(base, adapter=None):
    config = json.loads((base / "config.json").read_text())
    weights = {k: v.astype(np.float64) for k, v in load_file(base / "model.safetensors").items()}
    lora = load_lora(adapter) if adapter else {}
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    ids = [config["bos_token_id"], *tokenizer.encode(PROMPT, add_special_tokens=False).ids]
    prompt_len, out = len(ids), []
    while len(out) < MAX_TOKENS:
        scores = logits(weights, config, ids, lora)
        best = int(np.argmax(scores))
        margin = scores[best] - np.partition(scores, -2)[-2]
        assert margin > 1e-4, "a near tie would make the comparison meaningless"
        if best == config["eos_token_id"]:
            break
        out.append(best)
        ids.append(best)
    return prompt_len, out


def engine(factory, *adapter):
    result = json.loads(run("generate", "--base", factory["base"], *adapter, "--prompt", PROMPT,
                            "--max-tokens", MAX_TOKENS, "--temperature", 0, "--json").stdout)
    return result["prompt_tokens"], result["tokens"]


def test_the_base_model_decodes_as_the_reference_llama(factory):
    assert engine(factory) == greedy(factory["base"])


def test_the_adapter_decodes_as_the_reference_peft_lora(factory):
    with_adapter = greedy(factory["base"], factory["adapter"])
    assert engine(factory, "--adapter", factory["adapter"]) == with_adapter
    assert with_adapter != greedy(factory["base"]), "the adapter changes what the model says"
