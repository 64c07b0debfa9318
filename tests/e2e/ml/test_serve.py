"""OpenLoRA through the official `openai` client: `openledger serve` with a base model and several
adapters, answering completions and chat completions (streamed and not), batching requests for
different adapters together without changing any one's answer, and refusing bad requests with
OpenAI's error shapes while the others go on."""

import json
import shutil
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest
from safetensors.numpy import load_file, save_file

from ml_cli import factory, run, serving  # noqa: F401  (factory is a fixture)

PROMPT = "Q: what is known? A:"


def flipped_copy(adapter, out):
    """The adapter with every B negated: a second adapter whose outputs differ."""
    shutil.copytree(adapter, out)
    tensors = load_file(out / "adapter_model.safetensors")
    save_file({k: -v if "lora_B" in k else v for k, v in tensors.items()}, out / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def server(factory, tmp_path_factory):  # noqa: F811
    adapters = tmp_path_factory.mktemp("adapters")
    shutil.copytree(factory["adapter"], adapters / "alpha")
    flipped_copy(factory["adapter"], adapters / "beta")
    shutil.copytree(factory["adapter"], adapters / "broken")
    (adapters / "broken" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with serving("--base", factory["base"], "--adapters", adapters, "--max-batch", 8, "--cache-adapters", 1,
                 timeout=60) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        yield {"client": client, "url": url, "base": factory["base"], "adapter": factory["adapter"],
               "base_id": factory["base"].name}


def complete(client, model, prompt=PROMPT, **kw):
    return client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0, **kw)


def test_models_lists_the_base_and_every_adapter(server):
    ids = [m.id for m in server["client"].models.list()]
    assert ids == [server["base_id"], "alpha", "beta", "broken"]


def test_greedy_completions_equal_openledger_generate(server):
    for model, adapter in [(server["base_id"], []), ("alpha", ["--adapter", server["adapter"]])]:
        got = complete(server["client"], model)
        want = run("generate", "--base", server["base"], *adapter, "--prompt", PROMPT, "--max-tokens", 12,
                   "--temperature", 0).stdout
        assert got.choices[0].text == want.rstrip("\n"), model
        assert got.object == "text_completion" and got.model == model
        assert got.usage.completion_tokens <= 12
        assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
        assert got.choices[0].finish_reason in ("stop", "length")


def test_requests_for_different_adapters_batched_together_keep_their_answers(server):
    client = server["client"]
    models = [server["base_id"], "alpha", "beta"] * 4
    alone = {m: complete(client, m).choices[0].text for m in set(models)}
    assert alone["alpha"] != alone["beta"], "the flipped adapter must answer differently"
    with ThreadPoolExecutor(len(models)) as pool:
        together = list(pool.map(lambda m: complete(client, m).choices[0].text, models))
    assert together == [alone[m] for m in models]


def test_chat_streams_the_same_text_as_a_whole_answer(server):
    client = server["client"]
    messages = [{"role": "system", "content": "Legal notes."}, {"role": "user", "content": "what is known?"}]
    whole = client.chat.completions.create(model="alpha", messages=messages, max_tokens=10, seed=3,
                                           temperature=0.9)
    assert whole.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="alpha", messages=messages, max_tokens=10, seed=3,
                                                 temperature=0.9, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_logprobs_are_the_models_own_and_streamed_alike(server):
    """`logprobs` as OpenAI reports them: a completion's parallel lists, a chat's entries with
    bytes; greedy picks the most likely token, every value is a log-probability of the model's
    distribution (not the sampler's), and a stream reports what the whole answer does."""
    client = server["client"]
    plain = complete(client, "alpha")
    assert plain.choices[0].logprobs is None
    got = complete(client, "alpha", logprobs=3).choices[0]
    assert got.text == plain.choices[0].text
    lp = got.logprobs
    assert "".join(lp.tokens) == got.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert value <= 0 and 1 <= len(top) <= 3
        assert top.get(token) == pytest.approx(max(top.values()), abs=1e-6)  # greedy: the argmax
        assert sum(np.exp(v) for v in top.values()) <= 1 + 1e-4

    messages = [{"role": "user", "content": "what is known?"}]
    ask = dict(model="beta", messages=messages, max_tokens=10, seed=5, temperature=1.5, logprobs=True,
               top_logprobs=2)
    whole = client.chat.completions.create(**ask).choices[0]
    entries = whole.logprobs.content
    assert b"".join(bytes(e.bytes) for e in entries).decode(errors="replace") == whole.message.content
    assert all(len(e.top_logprobs) == 2 and e.top_logprobs[0].logprob >= e.logprob for e in entries)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="beta", messages=messages, max_tokens=2, top_logprobs=2)
    assert e.value.param == "top_logprobs" and "requires logprobs" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="beta", messages=messages, max_tokens=2, logprobs=True,
                                       top_logprobs=21)
    assert e.value.param == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, "alpha", logprobs=21)
    assert e.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, "alpha", logprobs=1, echo=True)
    assert e.value.param == "echo"
    # OpenAI's clients may send an unset option as null.
    body = json.dumps({"model": "beta", "messages": messages, "max_tokens": 2, "logprobs": None}).encode()
    answer = urllib.request.urlopen(urllib.request.Request(
        f"{server['url']}/v1/chat/completions", body, {"Content-Type": "application/json"}), timeout=60)
    assert json.load(answer)["choices"][0]["logprobs"] is None


def test_logprobs_cover_the_tokens_a_stop_sequence_leaves(server):
    """Tokens a stop sequence cuts away whole are not reported; each one reported starts inside
    the text, whole answers and streams alike."""
    client = server["client"]
    model = server["base_id"]
    whole = complete(client, model).choices[0].text
    # Two characters after the text's first visible one, so that some text comes before them.
    at = len(whole) - len(whole.lstrip()) + 1
    stop = whole[at:at + 2]
    assert stop.strip(), whole
    got = complete(client, model, logprobs=1, stop=stop).choices[0]
    assert got.text == whole[:whole.index(stop)]
    lp = got.logprobs
    assert "".join(lp.tokens).startswith(got.text)
    assert all(offset < len(got.text) for offset in lp.text_offset), (got.text, lp.tokens)
    chunks = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=1,
                                            stop=stop, stream=True))
    assert [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens] == lp.tokens


def test_bad_requests_get_openai_errors_and_change_nothing(server):
    client = server["client"]
    before = complete(client, "alpha").choices[0].text
    with pytest.raises(openai.NotFoundError) as e:
        complete(client, "no-such-adapter")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="alpha", prompt=PROMPT, temperature=5)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, "alpha", prompt="word " * 500)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        complete(client, "alpha", n=2)
    with pytest.raises(openai.InternalServerError) as e:
        complete(client, "broken")
    assert "adapter broken could not be loaded" in e.value.message
    assert complete(client, "alpha").choices[0].text == before


def metrics(server):
    text = urllib.request.urlopen(f"{server['url']}/metrics", timeout=10).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_count_tokens_and_adapter_cache_traffic(server):
    before = metrics(server)
    complete(server["client"], "alpha")
    complete(server["client"], "beta")  # the cache holds one adapter: alpha is evicted
    complete(server["client"], "alpha")  # and beta in turn
    after = metrics(server)
    grew = {k: after[k] - before.get(k, 0) for k in after}
    assert grew["openledger_serve_generated_tokens_total"] > 0
    assert grew["openledger_serve_adapter_cache_misses_total"] >= 2
    assert grew["openledger_serve_adapter_cache_hits_total"] + grew["openledger_serve_adapter_cache_misses_total"] == 3
    assert grew["openledger_serve_adapter_cache_evictions_total"] == 2
    assert after["openledger_serve_adapter_cache_adapters"] == 1
    assert grew['openledger_serve_time_to_first_token_seconds_bucket{le="+Inf"}'] == 3
    assert after["openledger_serve_queue_depth"] == 0
