"""OpenLoRA inside `openledger dev`: a deployed model answers on the OpenAI API at once, and every
completion is attributed and settled on-chain, paid by a dev account behind an API key or by an
order the client signed itself. Checked with the official `openai` client and web3.py, including
a node killed in the middle of settling."""

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import openai
import pytest
import requests
from eth_account import Account
from web3 import Web3

from conftest import DEV_KEYS, OPEN, Node, client, send, base_tx
from test_flywheel import Restartable, base, key, wait_for  # noqa: F401 (base is a fixture)
from test_jobs import cli, cli_json, model_info
from test_modules import module, sign_order, transact

PPM = 1_000_000


@pytest.fixture(scope="module")
def served(base):  # noqa: F811
    path, files = base
    node = Node(extra_args=("--base", str(path)))
    w3 = client(node)
    model = trained_model(node, files)
    yield node, w3, model
    node.stop()


def trained_model(node, files) -> int:
    """A datanet contributed to by dev accounts 3 and 4 and approved, and a model proposed by dev
    account 2, approved, and trained on it by a job (with gradient sketches)."""
    datanet = cli_json(node, "datanet", "create", "--name", "Served notes", "--account", "0")["datanetId"]
    ids = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n + 3))["contributionId"]
           for n, f in enumerate(files)]
    cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
    wait_for(f"{node.api_url}/datanets/{datanet}/versions/1/index", lambda b: b.get("status") == "ready")
    model = cli_json(node, "model", "propose", "--name", "served-lora", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    cli(node, "model", "approve", model, "--account", "0")
    job = {"model": int(model), "datanets": [f"{datanet}@1"], "rank": 4, "targets": "q,v", "epochs": 2,
           "context": 64, "influenceDims": 16}
    accepted = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(2), timeout=30)
    done = wait_for(f"{node.api_url}/jobs/{accepted.json()['id']}",
                    lambda b: b["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    return int(model)


def deploy(node, w3, model: int):
    """Dev account 1 stakes twice the minimum as operator; the creator deploys with it."""
    minimum = module(w3, "IStaking").functions.minimumStake(model).call()
    cli(node, "stake", "operator", model, str(Web3.from_wei(2 * minimum, "ether")), "--account", "1")
    assert cli_json(node, "model", "show", model)["status"] == "Trained"
    cli(node, "model", "deploy", model, "--operator", w3.eth.accounts[1], "--input-rate", "0.1",
        "--output-rate", "0.4", "--account", "2")


def openai_client(node, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.api_url}/v1", api_key=api_key, max_retries=0, timeout=120)


def prompt_from(files) -> str:
    """The first half of the first row of the data, for the model to go on with."""
    words = files[0].read_text().split("\n\n")[0].split()
    return " ".join(words[: len(words) // 2])


def funded_user(w3):
    """A new account, funded with 5 OPEN by dev account 0, with 2 OPEN of it in escrow."""
    user = Account.create()
    send(w3, {**base_tx(w3), "to": user.address, "value": 5 * OPEN, "gas": 21_000, "maxFeePerGas": 10**11,
              "maxPriorityFeePerGas": 10**9}, DEV_KEYS[0])
    transact(w3, module(w3, "ISettlement").functions.deposit(), user.key, value=2 * OPEN)
    return user


def settled(w3, record: dict) -> dict:
    """The Settled event of the completion's settlement transaction, checked against the record."""
    receipt = w3.eth.wait_for_transaction_receipt(record["settlementTx"], timeout=60)
    assert receipt.status == 1
    events = module(w3, "ISettlement").events.Settled().process_receipt(receipt)
    mine = [e.args for e in events if "0x" + e.args.orderHash.hex() == record["receiptId"]]
    assert len(mine) == 1, events
    return mine[0]


def check_attribution(attribution: dict, fee_event) -> None:
    """The attribution in the response is what was settled: the same method and datanet version,
    weights that sum to a million parts (or none)."""
    methods = {"none": 0, "span": 1, "gradient": 2}
    assert fee_event.method == methods[attribution["method"]]
    assert int(attribution["datanetId"]) == fee_event.datanetId
    assert attribution["datanetVersion"] == fee_event.datanetVersion == 1
    total = sum(c["ppm"] for c in attribution["weights"])
    assert total == (PPM if attribution["method"] != "none" else 0), attribution


def test_a_deployed_model_answers_and_every_completion_is_attributed_and_settled(served, base):  # noqa: F811
    node, w3, model = served
    _, files = base
    name = f"model-{model}"
    user = openai_client(node, "dev-4")
    with pytest.raises(openai.PermissionDeniedError, match="not Deployed"):
        user.completions.create(model=name, prompt="Q: hello A:", max_tokens=4)
    deploy(node, w3, model)
    with pytest.raises(openai.NotFoundError):
        user.completions.create(model="model-999", prompt="Q: hello A:", max_tokens=4)
    with pytest.raises(openai.APIStatusError, match="deposit OPEN first") as broke:
        user.completions.create(model=name, prompt="Q: hello A:", max_tokens=4)
    assert broke.value.status_code == 402
    with pytest.raises(openai.AuthenticationError, match="unknown API key"):
        openai_client(node, "sk-nobody").completions.create(model=name, prompt="Q: hello A:", max_tokens=4)

    cli(node, "settle", "deposit", "20", "--account", "4")
    settlement = module(w3, "ISettlement")
    payer = w3.eth.accounts[4]
    escrow = settlement.functions.balanceOf(payer).call()
    prompt = prompt_from(files)
    answer = user.completions.create(model=name, prompt=prompt, max_tokens=12, temperature=0)
    record = answer.model_dump()["openledger"]
    print("attribution:", record["attribution"])
    event = settled(w3, record)
    assert event.user == payer and event.modelId == model and int(record["fee"]) == event.fee > 0
    assert event.promptHash == Web3.keccak(text=prompt)
    assert event.outputHash == Web3.keccak(text=answer.choices[0].text)
    assert (event.inputTokens, event.outputTokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    check_attribution(record["attribution"], event)
    assert settlement.functions.balanceOf(payer).call() == escrow - event.fee

    # Streamed chat: the last chunk carries the record.
    chunks = list(user.chat.completions.create(model=name, messages=[{"role": "user", "content": "hello"}],
                                               max_tokens=6, stream=True))
    streamed = chunks[-1].model_dump()["openledger"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    event = settled(w3, streamed)
    assert event.outputHash == Web3.keccak(text=text)
    check_attribution(streamed["attribution"], event)
    status = requests.get(f"{node.api_url}/settlements/{streamed['receiptId']}", timeout=30).json()
    assert status["state"] == "settled"

    # The creator's share is claimable at once.
    creator = w3.eth.accounts[2]
    owed = settlement.functions.rewards(creator).call()
    assert owed > 0
    claim = w3.eth.get_transaction_receipt(cli_json(node, "settle", "claim", "--account", "2")["tx"])
    assert settlement.events.Claimed().process_receipt(claim)[0].args.amount == owed
    assert settlement.functions.rewards(creator).call() == 0


def test_a_client_signed_order_pays_and_cannot_be_spent_twice(served):
    node, w3, model = served
    if module(w3, "IModels").functions.getModel(model).call()[2] != 4:
        deploy(node, w3, model)
    user = funded_user(w3)
    order, signed = sign_order(w3, user, model, 7)
    body = {"order": {"user": order[0], "modelId": hex(order[1]), "maxFee": hex(order[2]),
                      "nonce": hex(order[3]), "expiry": order[4]},
            "signature": "0x" + signed.signature.hex().removeprefix("0x")}
    anyone = openai_client(node, "unused")
    forged = {**body, "signature": "0x" + Account.create().unsafe_sign_hash(b"\x01" * 32).signature.hex()
              .removeprefix("0x")}
    with pytest.raises(openai.AuthenticationError, match="signature"):
        anyone.completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4,
                                  extra_body={"openledger": forged})
    answer = anyone.completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4,
                                       extra_body={"openledger": body})
    record = answer.model_dump()["openledger"]
    event = settled(w3, record)
    assert event.user == user.address and Decimal(event.fee) <= Decimal(2 * OPEN)
    assert module(w3, "ISettlement").functions.nonceUsed(user.address, 7).call()
    with pytest.raises(openai.BadRequestError, match="spent"):
        anyone.completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4,
                                  extra_body={"openledger": body})


def order_body(w3, user, model: int, nonce: int, max_fee: int) -> dict:
    """The request's `openledger` field: an order signed by `user`, as the README shows it."""
    order, signed = sign_order(w3, user, model, nonce, max_fee)
    return {"order": {"user": order[0], "modelId": hex(order[1]), "maxFee": hex(order[2]),
                      "nonce": hex(order[3]), "expiry": order[4]},
            "signature": "0x" + signed.signature.hex().removeprefix("0x")}


def at_once(n: int, request) -> list:
    """Runs `request` n times at once; each outcome is its answer or the error it raised."""
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(request) for _ in range(n)]
    return [f.exception() or f.result() for f in futures]


def test_no_completion_is_served_before_its_worst_case_fee_is_secured(served):
    node, w3, model = served
    if module(w3, "IModels").functions.getModel(model).call()[2] != 4:
        deploy(node, w3, model)
    name, settlement = f"model-{model}", module(w3, "ISettlement")
    anyone = openai_client(node, "unused")
    user = funded_user(w3)
    escrow = settlement.functions.balanceOf(user.address).call()

    # An order capped at 1 wei cannot pay for 100 tokens: refused before any is generated.
    tiny = order_body(w3, user, model, 21, max_fee=1)
    with pytest.raises(openai.APIStatusError, match="raise maxFee or lower max_tokens") as refused:
        anyone.completions.create(model=name, prompt="Q: hi A:", max_tokens=100, extra_body={"openledger": tiny})
    assert refused.value.status_code == 402
    assert not settlement.functions.nonceUsed(user.address, 21).call()

    # One order sent four times at once is served once and charged once.
    body = order_body(w3, user, model, 22, max_fee=2 * OPEN)
    outcomes = at_once(4, lambda: anyone.completions.create(
        model=name, prompt="Q: hi A:", max_tokens=4, extra_body={"openledger": body}))
    served_once = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(served_once) == 1, outcomes
    assert all(isinstance(o, (openai.ConflictError, openai.BadRequestError)) for o in outcomes if o not in served_once)
    event = settled(w3, served_once[0].model_dump()["openledger"])
    assert settlement.functions.balanceOf(user.address).call() == escrow - event.fee

    # A dev account whose escrow covers one worst case, asked four times at once: one answer.
    cli(node, "settle", "deposit", "1", "--account", "5")
    probe = openai_client(node, "dev-5").completions.create(model=name, prompt="Q: hi A:", max_tokens=8)
    worst = settlement.functions.quote(model, probe.usage.prompt_tokens, 8).call()
    cli(node, "settle", "deposit", str(Web3.from_wei(worst, "ether")), "--account", "6")
    dev6 = openai_client(node, "dev-6")
    outcomes = at_once(4, lambda: dev6.completions.create(model=name, prompt="Q: hi A:", max_tokens=8))
    answered = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(answered) == 1, outcomes
    assert all(getattr(o, "status_code", None) == 402 for o in outcomes if o not in answered)
    settled(w3, answered[0].model_dump()["openledger"])
    with pytest.raises(openai.APIStatusError, match="wei") as broke:
        dev6.completions.create(model=name, prompt="Q: hi A:", max_tokens=8)
    assert broke.value.status_code == 402


def paying(served, account: int):
    """The served model deployed, and dev account `account` with 5 OPEN in escrow: the
    Settlement module, the payer, and its escrow now."""
    node, w3, model = served
    if module(w3, "IModels").functions.getModel(model).call()[2] != 4:
        deploy(node, w3, model)
    settlement = module(w3, "ISettlement")
    cli(node, "settle", "deposit", "5", "--account", str(account))
    payer = w3.eth.accounts[account]
    return settlement, payer, settlement.functions.balanceOf(payer).call()


def test_a_stream_the_client_cuts_is_charged_for_what_was_generated(served):
    node, w3, model = served
    settlement, payer, escrow = paying(served, 7)
    stream = openai_client(node, "dev-7").completions.create(
        model=f"model-{model}", prompt="Q: hello A:", max_tokens=200, temperature=1.0, stream=True)
    for n, _ in enumerate(stream):
        if n == 2:
            break
    stream.close()
    charged = wait_for_value(lambda: escrow - settlement.functions.balanceOf(payer).call())
    assert charged > 0
    # At most the worst case of the 200 tokens asked for, at least the platform fee.
    assert charged <= settlement.functions.quote(model, 200, 200).call()


def test_a_client_that_leaves_before_its_answer_still_pays_for_it(served):
    node, w3, model = served
    settlement, payer, escrow = paying(served, 6)
    impatient = openai.OpenAI(base_url=f"{node.api_url}/v1", api_key="dev-6", max_retries=0, timeout=0.01)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model=f"model-{model}", prompt="Q: hello A:", max_tokens=64, temperature=1.0)
    charged = wait_for_value(lambda: escrow - settlement.functions.balanceOf(payer).call())
    assert 0 < charged <= settlement.functions.quote(model, 64, 64).call()


def test_escrow_being_unlocked_pays_for_no_new_completion(served):
    """Escrow its payer has started to take out (`settle unlock`) is still there, but a node
    counts on none of it: it could leave before a new completion's settlement lands."""
    settlement, payer, escrow = paying(served, 3)
    node, w3, model = served
    payer_client = openai_client(node, "dev-3")
    cli(node, "settle", "unlock", str(Web3.from_wei(escrow, "ether")), "--account", "3")
    with pytest.raises(openai.APIStatusError, match="not unlocking") as refused:
        payer_client.completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4)
    assert refused.value.status_code == 402
    assert settlement.functions.balanceOf(payer).call() == escrow
    cli(node, "settle", "unlock", "0", "--account", "3")  # cancelled: the escrow pays again
    answer = payer_client.completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4)
    event = settled(w3, answer.model_dump()["openledger"])
    assert settlement.functions.balanceOf(payer).call() == escrow - event.fee


def test_an_adapter_that_is_not_the_registered_one_is_not_served(served):
    node, w3, model = served
    if module(w3, "IModels").functions.getModel(model).call()[2] != 4:
        deploy(node, w3, model)
    cli(node, "settle", "deposit", "1", "--account", "8")
    weights = Path(node.datadir.name) / "adapters" / f"model-{model}" / "adapter_model.safetensors"
    listed = lambda: [m.id for m in openai_client(node, "dev-8").models.list()]  # noqa: E731
    # Only what the node serves is listed: the deployed model, not the base alone.
    assert listed() == [f"model-{model}"]
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        with pytest.raises(openai.ConflictError, match="not to the adapterHash"):
            openai_client(node, "dev-8").completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4)
        assert listed() == []
    finally:
        weights.write_bytes(original)
    answer = openai_client(node, "dev-8").completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4)
    assert answer.model_dump()["openledger"]["settlementTx"]


def test_a_model_trained_elsewhere_is_served_from_its_published_adapter(served, base, tmp_path):  # noqa: F811
    node, w3, model = served
    base_dir, _ = base
    datanet = model_info(w3, model)["datanetIds"][0]
    other = cli_json(node, "model", "propose", "--name", "elsewhere", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    other = int(other)
    cli(node, "model", "approve", other, "--account", "0")
    adapters = f"{node.api_url}/models/{other}/adapter"
    early = requests.put(adapters, files={"adapter_model.safetensors": b"x", "adapter_config.json": b"{}"},
                         timeout=30)
    assert early.status_code == 409 and "no registered adapter" in early.json()["error"], early.text
    assert requests.put(f"{node.api_url}/models/999/adapter", files={"x": b"x"}, timeout=30).status_code == 404

    # Trained in a folder of the user's own, registered and published by the CLI.
    out = tmp_path / "elsewhere"
    cli(node, "train", "--base", base_dir, "--datanet", f"{datanet}@1", "--out", out, "--rank", "4",
        "--targets", "q,v", "--epochs", "1", "--context", "64", "--model", other, "--account", "2")
    weights = (out / "adapter_model.safetensors").read_bytes()
    registered = "0x" + model_info(w3, other)["adapterHash"].hex()
    assert registered == Web3.keccak(weights).to_0x_hex()
    listed = requests.get(f"{node.api_url}/adapters/{registered}", timeout=30).json()
    assert {f["name"] for f in listed["files"]} == {"adapter_model.safetensors", "adapter_config.json",
                                                    "metrics.json", "influence.bin"}
    fetched = requests.get(f"{node.api_url}/adapters/{registered}/adapter_model.safetensors", timeout=30)
    assert fetched.content == weights
    served_dir = Path(node.datadir.name) / "adapters" / f"model-{other}"
    assert not served_dir.exists()
    # Only the creator publishes, only the registered weights, with a config that is JSON.
    config = (out / "adapter_config.json").read_bytes()
    unsigned = requests.put(adapters, files={"adapter_model.safetensors": weights, "adapter_config.json": b"{}"},
                            timeout=30)
    assert unsigned.status_code == 401, unsigned.text
    stranger = requests.put(adapters, files={"adapter_model.safetensors": weights, "adapter_config.json": b"{}"},
                            headers=key(1), timeout=30)
    assert stranger.status_code == 403 and "creator" in stranger.json()["error"], stranger.text
    junk = requests.put(adapters, files={"adapter_model.safetensors": weights, "adapter_config.json": b"{{{"},
                        headers=key(2), timeout=30)
    assert junk.status_code == 400 and "not a JSON object" in junk.json()["error"], junk.text
    forged = requests.put(adapters, files={"adapter_model.safetensors": weights + b"!", "adapter_config.json": config},
                          headers=key(2), timeout=30)
    assert forged.status_code == 400 and "registered adapterHash" in forged.json()["error"], forged.text
    stored = requests.get(f"{node.api_url}/adapters/{registered}/adapter_config.json", timeout=30)
    assert stored.content == config
    # Another model registering the same weights cannot replace what their creator published.
    copycat = cli_json(node, "model", "propose", "--name", "copycat", "--base-model", "tiny",
                       "--datanet", datanet, "--account", "5")["modelId"]
    cli(node, "model", "approve", copycat, "--account", "0")
    cli(node, "model", "register", copycat, "--adapter-hash", registered, "--datanet-version", "1",
        "--account", "5")
    taken = requests.put(f"{node.api_url}/models/{copycat}/adapter",
                         files={"adapter_model.safetensors": weights, "adapter_config.json": b"{}"},
                         headers=key(5), timeout=30)
    assert taken.status_code == 409 and "published by" in taken.json()["error"], taken.text
    assert requests.get(f"{node.api_url}/adapters/{registered}/adapter_config.json", timeout=30).content == config

    deploy(node, w3, other)
    cli(node, "settle", "deposit", "1", "--account", "9")
    answer = openai_client(node, "dev-9").completions.create(model=f"model-{other}", prompt="Q: hi A:",
                                                             max_tokens=4)
    assert answer.model_dump()["openledger"]["settlementTx"]
    assert (served_dir / "adapter_model.safetensors").read_bytes() == weights
    assert (served_dir / "influence.bin").read_bytes() == (out / "influence.bin").read_bytes()


def test_a_node_fetches_an_adapter_it_lacks_from_a_peer_by_its_registered_hash(served, base):  # noqa: F811
    """A second node, started with `--adapter-peer` naming the first one's content API, serves a
    model whose registered adapter only the first holds: it fetches it by the hash on its own
    chain, checks it, and answers as the first does. A hash no peer holds is refused, naming
    who was asked."""
    node, w3, model = served
    path, files = base
    if model_info(w3, model)["status"] != 4:
        deploy(node, w3, model)
    registered = "0x" + model_info(w3, model)["adapterHash"].hex()
    peer = Node(extra_args=("--base", str(path), "--adapter-peer", node.api_url))
    try:
        peer_w3 = client(peer)
        # Contribution ids here differ from the first node's: its sketches name other rows.
        other = cli_json(peer, "datanet", "create", "--name", "Other notes", "--account", "0")["datanetId"]
        for f in files:
            cli(peer, "datanet", "contribute", other, f, "--account", "5")
        datanet = cli_json(peer, "datanet", "create", "--name", "Peer notes", "--account", "0")["datanetId"]
        ids = [cli_json(peer, "datanet", "contribute", datanet, f, "--account", "3")["contributionId"]
               for f in files]
        cli(peer, "datanet", "approve", datanet, *ids, "--account", "0")
        copies = []
        for name, adapter_hash in (("fetched", registered), ("nowhere", "0x" + "ab" * 32)):
            copy = int(cli_json(peer, "model", "propose", "--name", name, "--base-model", "tiny",
                                "--datanet", datanet, "--account", "2")["modelId"])
            cli(peer, "model", "approve", copy, "--account", "0")
            cli(peer, "model", "register", copy, "--adapter-hash", adapter_hash, "--datanet-version", "1",
                "--account", "2")
            deploy(peer, peer_w3, copy)
            copies.append(copy)
        cli(peer, "settle", "deposit", "1", "--account", "4")
        cli(node, "settle", "deposit", "1", "--account", "4")
        asked = dict(prompt=prompt_from(files), max_tokens=8, temperature=0)
        here = openai_client(node, "dev-4").completions.create(model=f"model-{model}", **asked)
        there = openai_client(peer, "dev-4").completions.create(model=f"model-{copies[0]}", **asked)
        assert there.choices[0].text == here.choices[0].text
        assert there.model_dump()["openledger"]["settlementTx"]
        # Whatever attributes an answer here, it is settled: gradient weights that name the
        # first chain's contributions are not used.
        ours = {str(i) for i in ids}
        for prompt in ("Q: hi A:", "The", "Patients with", "Section 4"):
            paid = openai_client(peer, "dev-4").completions.create(
                model=f"model-{copies[0]}", prompt=prompt, max_tokens=8, temperature=0).model_dump()["openledger"]
            assert "error" not in paid and settled(peer_w3, paid).fee > 0, paid
            credited = {w["contribution"] for w in paid["attribution"]["weights"]}
            assert credited <= ours, paid["attribution"]
        fetched = Path(peer.datadir.name) / "adapters" / f"model-{copies[0]}" / "adapter_model.safetensors"
        assert Web3.keccak(fetched.read_bytes()).to_0x_hex() == registered
        with pytest.raises(openai.APIStatusError, match=node.api_url) as missing:
            openai_client(peer, "dev-4").completions.create(model=f"model-{copies[1]}", prompt="Q: hi A:",
                                                            max_tokens=4)
        assert missing.value.status_code == 503
    finally:
        peer.stop()


def wait_for_value(read, timeout: float = 60):
    """Polls `read` until it is truthy (a settlement lands a block or two later)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value:
            return value
        time.sleep(0.2)
    return read()


def test_a_settlement_cut_by_a_crash_is_charged_once_after_restart(base, tmp_path):  # noqa: F811
    path, files = base
    node = Restartable(tmp_path / "datadir", path)
    w3 = node.start()
    try:
        model = trained_model(node, files)
        deploy(node, w3, model)
        cli(node, "settle", "deposit", "20", "--account", "4")
        payer = w3.eth.accounts[4]
        escrow = module(w3, "ISettlement").functions.balanceOf(payer).call()
        node.kill()
        # Blocks an hour apart: the settlements are sent but not included when the node dies.
        w3 = node.start(block_time="3600")
        user = openai_client(node, "dev-4")
        records = [user.completions.create(model=f"model-{model}", prompt=prompt_from(files), max_tokens=n,
                                           temperature=0).model_dump()["openledger"] for n in (4, 6, 8)]
        for record in records:
            pending = requests.get(f"{node.api_url}/settlements/{record['receiptId']}", timeout=30).json()
            assert pending["state"] == "pending", pending
        node.kill()
        w3 = node.start()
        for record in records:
            status = wait_for(f"{node.api_url}/settlements/{record['receiptId']}",
                              lambda b: b.get("state") != "pending")
            assert status["state"] == "settled", status
        settlement = module(w3, "ISettlement")
        ids = {r["receiptId"] for r in records}
        events = [e for e in settlement.events.Settled().get_logs(from_block=0) if "0x" + e.args.orderHash.hex() in ids]
        assert sorted("0x" + e.args.orderHash.hex() for e in events) == sorted(ids)  # each once
        # The lost transactions are sent again together: one batch.
        assert len({e.transactionHash for e in events}) == 1
        fees = sum(int(r["fee"]) for r in records)
        assert settlement.functions.balanceOf(payer).call() == escrow - fees == escrow - sum(e.args.fee for e in events)
    finally:
        node.kill()


def settle_tampered(w3, model: int, files, nonce: int):
    """The operator (dev account 1) settles, through web3.py, an answer that repeats contributor
    1's row with all the weight on contribution 2; returns the settlement's receipt, the prompt
    and the output."""
    settlement = module(w3, "ISettlement")
    user = funded_user(w3)
    row = files[0].read_text().split("\n\n")[0]
    prompt = prompt_from(files)
    output = row[len(prompt):]
    order, signature = sign_order(w3, user, model, nonce)
    # Served by artifact version 1, trained on version 1 of datanet 1; span-attributed.
    receipt = (len(prompt) // 4, len(output) // 4, Web3.keccak(text=prompt), Web3.keccak(text=output), 1, 1, 1, 1,
               [2], [PPM])
    settled_receipt, _ = transact(w3, settlement.functions.settle(order, signature.signature, receipt), DEV_KEYS[1])
    return settled_receipt, prompt, output


def test_an_operator_who_settles_tampered_weights_is_caught_by_a_challenge(served, base):  # noqa: F811
    node, w3, model = served
    _, files = base
    if module(w3, "IModels").functions.getModel(model).call()[2] != 4:
        deploy(node, w3, model)
    settlement, staking = module(w3, "ISettlement"), module(w3, "IStaking")
    settled_receipt, prompt, output = settle_tampered(w3, model, files, 11)
    recorded = settlement.events.ReceiptRecorded().process_receipt(settled_receipt)[0].args
    record = tuple(recorded.record.values())
    operator = w3.eth.accounts[1]
    stake_before = staking.functions.operatorStake(model, operator).call()
    challenger = DEV_KEYS[2]
    bond = settlement.functions.challengeBond().call()
    balance_before = w3.eth.get_balance(Account.from_key(challenger).address)
    challenged, gas = transact(w3, settlement.functions.challenge(recorded.receiptId, record, prompt, output),
                               challenger, value=bond)
    verdict = settlement.events.Challenged().process_receipt(challenged)[0].args
    resettled = settlement.events.Resettled().process_receipt(challenged)[0].args
    assert verdict.upheld and verdict.settledWeightsHash != verdict.recomputedWeightsHash
    assert settlement.functions.receiptStatus(recorded.receiptId).call()[0] == 2  # Corrected
    assert staking.functions.operatorStake(model, operator).call() == stake_before - resettled.slashed > 0
    paid = w3.eth.get_balance(Account.from_key(challenger).address) - balance_before + gas
    assert paid == resettled.toChallenger > 0  # the bond came back, and half of what the slash left

    # The same from the command line, which finds the record in the receipt's event itself.
    settled_receipt, prompt, output = settle_tampered(w3, model, files, 12)
    receipt_id = "0x" + settlement.events.ReceiptRecorded().process_receipt(settled_receipt)[0].args.receiptId.hex()
    sent = cli_json(node, "settle", "challenge", receipt_id, "--prompt", prompt, "--output", output,
                    "--account", "5")
    verdict = settlement.events.Challenged().process_receipt(w3.eth.get_transaction_receipt(sent["tx"]))[0].args
    assert verdict.upheld and settlement.functions.receiptStatus(receipt_id).call()[0] == 2
    again = cli(node, "settle", "challenge", receipt_id, "--prompt", prompt, "--output", output, "--account", "5",
                check=False)
    assert again.returncode != 0 and "AlreadyResolved" in again.stderr


def test_a_retrained_model_serves_its_new_version_once_deployed_again(served, tmp_path):
    """A deployed model's creator trains it again on a newer datanet version: the new adapter is
    registered as artifact version 2 while version 1 goes on answering, until the creator deploys
    the model again; every completion's receipt names the version that answered it."""
    node, w3, model = served
    if model_info(w3, model)["status"] != 4:
        deploy(node, w3, model)
    cli(node, "settle", "deposit", "1", "--account", "7")
    first = model_info(w3, model)
    assert (first["artifactVersion"], first["artifactCount"]) == (1, 1)
    datanet = first["datanetIds"][0]
    notes = tmp_path / "more.txt"
    notes.write_text("Zorblat heals the quinx within three days.\n\nThe quinx is a rare fever of goats.\n")
    extra = cli_json(node, "datanet", "contribute", datanet, notes, "--account", "5")["contributionId"]
    cli(node, "datanet", "approve", datanet, extra, "--account", "0")
    wait_for(f"{node.api_url}/datanets/{datanet}/versions/2/index", lambda b: b.get("status") == "ready")

    job = {"model": model, "datanets": [f"{datanet}@2"], "rank": 4, "targets": "q,v", "epochs": 1,
           "context": 64, "seed": 11}
    stranger = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(1), timeout=30)
    assert stranger.status_code == 403 and "creator" in stranger.json()["error"], stranger.text
    accepted = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(2), timeout=30)
    assert accepted.status_code == 202, accepted.text
    done = wait_for(f"{node.api_url}/jobs/{accepted.json()['id']}",
                    lambda b: b["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert any("served once the model is deployed again" in line["message"] for line in done["log"]), done

    models = module(w3, "IModels")
    retrained = model_info(w3, model)
    assert (retrained["status"], retrained["artifactVersion"], retrained["artifactCount"]) == (4, 1, 2)
    assert retrained["adapterHash"] == first["adapterHash"]
    new_hash, new_versions, _, _, deployed_at = models.functions.getArtifact(model, 2).call()
    assert deployed_at == 0
    assert new_versions == [2] and new_hash != first["adapterHash"]
    assert models.functions.getArtifact(model, 1).call()[0] == first["adapterHash"]
    served_weights = Path(node.datadir.name) / "adapters" / f"model-{model}" / "adapter_model.safetensors"
    dev7 = openai_client(node, "dev-7")

    def answer() -> dict:
        record = dev7.completions.create(model=f"model-{model}", prompt="Q: hi A:", max_tokens=4).model_dump()
        record = record["openledger"]
        assert settled(w3, record).artifactVersion == record["artifactVersion"]
        return record

    before = answer()
    assert (before["artifactVersion"], before["attribution"]["datanetVersion"]) == (1, 1)
    assert Web3.keccak(served_weights.read_bytes()) == first["adapterHash"]

    redeployed = cli_json(node, "model", "deploy", model, "--operator", w3.eth.accounts[1], "--input-rate", "0.1",
                          "--output-rate", "0.4", "--account", "2")
    assert redeployed["artifactVersion"] == 2
    after = answer()
    assert (after["artifactVersion"], after["attribution"]["datanetVersion"]) == (2, 2)
    assert Web3.keccak(served_weights.read_bytes()) == new_hash
    assert models.functions.getArtifact(model, 1).call()[0] == first["adapterHash"]


def test_the_services_reach_the_chain_in_process(served):
    """A completion is admitted, attributed and settled without one request to the node's own
    JSON-RPC port: the ledger and the settlement batcher call the chain in-process, and
    `/metrics` counts those calls apart."""
    node, w3, model = served
    if model_info(w3, model)["status"] != 4:
        deploy(node, w3, model)
    cli(node, "settle", "deposit", "1", "--account", "6")

    def counters() -> tuple:
        lines = requests.get(f"{node.api_url}/metrics", timeout=30).text.splitlines()
        total = lambda name: sum(float(line.rsplit(" ", 1)[1]) for line in lines  # noqa: E731
                                 if line.startswith(name + "{"))
        return total("openledger_rpc_requests_total"), total("openledger_services_chain_calls_total")

    rpc_before, services_before = counters()
    record = openai_client(node, "dev-6").completions.create(model=f"model-{model}", prompt="Q: hi A:",
                                                             max_tokens=4).model_dump()["openledger"]
    settlement = wait_for(f"{node.api_url}/settlements/{record['receiptId']}",
                          lambda b: b["state"] != "pending")
    assert settlement["state"] == "settled", settlement
    rpc_after, services_after = counters()
    assert rpc_after == rpc_before
    assert services_after > services_before
