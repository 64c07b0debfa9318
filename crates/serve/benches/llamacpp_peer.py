"""The llama.cpp side of the `smollm2` bench: the same GGUF file, prompts and threads.

Usage: python llamacpp_peer.py WORK_JSON. WORK_JSON (written by the bench) holds `gguf`, `threads`,
`prompt` (token ids), `decode` (tokens to generate after it), `rounds`, and `requests`: prompts
(token ids) with `max_tokens`, served one at a time as llama.cpp serves one model. Prints JSON
figures: prompt processing and decode tokens a second (medians of the rounds), and the sequential
requests' generated tokens a second.
"""

import json
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama


def single_stream(llm, prompt, decode):
    """Seconds to evaluate `prompt` from an empty cache, then to decode `decode` greedy tokens."""
    llm.reset()
    started = time.perf_counter()
    llm.eval(prompt)
    prompted = time.perf_counter()
    for _ in range(decode):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    return prompted - started, time.perf_counter() - prompted


def main():
    with open(sys.argv[1]) as f:
        work = json.load(f)
    llm = Llama(model_path=work["gguf"], n_ctx=1024, n_batch=512, n_threads=work["threads"],
                n_threads_batch=work["threads"], verbose=False)
    prompt, decode = work["prompt"], work["decode"]
    single_stream(llm, prompt, 4)  # warm-up
    runs = [single_stream(llm, prompt, decode) for _ in range(work["rounds"])]
    generated = 0
    started = time.perf_counter()
    for ids in work["requests"]:
        llm.reset()
        completion = llm.create_completion(ids, max_tokens=work["max_tokens"], temperature=0.0)
        generated += completion["usage"]["completion_tokens"]
    sequential = generated / (time.perf_counter() - started)
    print(json.dumps({
        "prompt_tokens_per_second": len(prompt) / statistics.median(r[0] for r in runs),
        "decode_tokens_per_second": decode / statistics.median(r[1] for r in runs),
        "sequential_tokens_per_second": sequential,
        "sequential_tokens": generated,
    }))


if __name__ == "__main__":
    main()
