"""The Infini-gram side of the `span_index` bench: build and query its index of the same rows.

Usage: python infinigram_peer.py INDEX_DIR QUERIES_JSON. INDEX_DIR holds `tokenized.0` and
`offset.0` in Infini-gram's layout (written by the bench); this builds `table.0` (its suffix array)
with the package's `rust_indexing` on one core, opens the index memory-mapped like ours, times
`InfiniGramEngine.attribute` (min_len 8, max_cnt 10,000) on each query and prints JSON figures.
"""

import argparse
import contextlib
import json
import math
import sys
import time

from infini_gram.engine import InfiniGramEngine
from infini_gram.indexing import build_sa


def main():
    index_dir, queries_path = sys.argv[1], sys.argv[2]
    with open(queries_path) as f:
        queries = json.load(f)
    args = argparse.Namespace(
        save_dir=index_dir, temp_dir=index_dir, worker_id=0, workers=1, shards=1,
        mem=16, cpus=1, token_width=2,
    )
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # its progress, not our figures
        build_sa(args)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    engine = InfiniGramEngine(index_dir=index_dir, eos_token_id=65534, token_dtype="u16")
    load_ms = (time.perf_counter() - started) * 1e3

    times, spans = [], 0
    for q in queries:
        started = time.perf_counter()
        result = engine.attribute(input_ids=q, delim_ids=[], min_len=8, max_cnt=10_000, enforce_bow=False)
        times.append(time.perf_counter() - started)
        spans += len(result["spans"])
    times.sort()

    def percentile(p):
        return times[min(max(math.ceil(len(times) * p), 1), len(times)) - 1] * 1e3

    json.dump({"build_s": build_s, "load_ms": load_ms, "p50_ms": percentile(0.5),
               "p99_ms": percentile(0.99), "spans": spans}, sys.stdout)


if __name__ == "__main__":
    main()
