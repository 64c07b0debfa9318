"""Paid training access to a private datanet, as its owner, its contributors and a model's
creator use it: the owner prices rows and approves requests, the fee is split to the wei between
three contributors by their rows, the owner and the treasury, a private file's rows are read only
by those who may (a forged, expired or unrelated signature is refused), and a training job reads
them once its model holds access. Checked with the CLI, web3.py and HTTP."""

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct

from conftest import DEV_KEYS, Node, client
from test_flywheel import base, key, wait_for  # noqa: F401 (base is a fixture)
from test_jobs import cli, cli_json, model_info
from test_modules import module, transact

PPM = 1_000_000
OWNER, CREATOR = 0, 2
CONTRIBUTORS = (3, 4, 5)
PRICE = 10**15  # 0.001 OPEN a row
Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"


def dev_key(n: int) -> str:
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{n}").key.to_0x_hex()


@pytest.fixture(scope="module")
def market(base, tmp_path_factory):  # noqa: F811
    """A node; a private datanet of dev account 0 with one file from each of three contributors,
    approved as version 1 and priced per row with approval; a model of dev account 2's on it."""
    path, files = base
    extra = tmp_path_factory.mktemp("access") / "third.txt"
    extra.write_text("Quinx fever passes within three days of rest.\n\nLorvane eases it at night.\n")
    node = Node(extra_args=("--base", str(path)))
    w3 = client(node)
    datanet = cli_json(node, "datanet", "create", "--name", "Ward notes", "--private",
                       "--account", str(OWNER))["datanetId"]
    datanets = module(w3, "IDatanets")
    for n in CONTRIBUTORS:
        transact(w3, datanets.functions.setContributor(int(datanet), w3.eth.accounts[n], True), DEV_KEYS[0])
    contributed = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n))
                   for n, f in zip(CONTRIBUTORS, [*files, extra])]
    cli(node, "datanet", "approve", datanet, *[c["contributionId"] for c in contributed],
        "--account", str(OWNER))
    cli(node, "datanet", "price", datanet, "0.001", "--approval", "--account", str(OWNER))
    model = cli_json(node, "model", "propose", "--name", "ward-lora", "--base-model", "tiny",
                     "--datanet", datanet, "--account", str(CREATOR))["modelId"]
    cli(node, "model", "approve", model, "--account", str(OWNER))
    yield node, w3, int(datanet), int(model), contributed
    node.stop()


def rows(node, content_hash: str, headers=None, **query):
    return requests.get(f"{node.api_url}/contributions/{content_hash}/rows", params=query,
                        headers=headers or {}, timeout=30)


def signed(node, w3, content_hash: str, signer: str, until: int) -> dict:
    message = f"OpenLedger rows of {content_hash} until {until} on chain {w3.eth.chain_id}"
    signature = Account.sign_message(encode_defunct(text=message), signer).signature.to_0x_hex()
    return {"X-OpenLedger-Signature": signature}


def test_a_private_file_is_read_only_by_those_who_may(market):
    node, w3, datanet, model, contributed = market
    mine = contributed[0]["contentHash"]
    anonymous = rows(node, mine)
    assert anonymous.status_code == 401 and "private datanet" in anonymous.json()["error"], anonymous.text
    assert rows(node, mine, key(CONTRIBUTORS[0])).status_code == 200  # its contributor
    assert rows(node, mine, key(OWNER)).status_code == 200
    stranger = rows(node, mine, key(CONTRIBUTORS[1]))
    assert stranger.status_code == 403 and "?model=ID" in stranger.json()["error"], stranger.text
    # The creator, for its model, before access is granted.
    assert rows(node, mine, key(CREATOR), model=model).status_code == 403
    # A signature of the contributor's own key reads; someone else's, or an expired one, does not.
    now = w3.eth.get_block("latest").timestamp
    own = signed(node, w3, mine, dev_key(CONTRIBUTORS[0]), now + 60)
    assert rows(node, mine, own, until=now + 60).status_code == 200
    assert rows(node, mine, own, until=now + 61).status_code == 403  # signed for another time
    forged = signed(node, w3, mine, Account.create().key, now + 60)
    assert rows(node, mine, forged, until=now + 60).status_code == 403
    late = signed(node, w3, mine, dev_key(CONTRIBUTORS[0]), now - 1)
    assert rows(node, mine, late, until=now - 1).status_code == 401
    far = signed(node, w3, mine, dev_key(CONTRIBUTORS[0]), now + 3600)
    assert rows(node, mine, far, until=now + 3600).status_code == 401
    # Naming someone else's file in a contribution of one's own gives no right to it, nor makes it
    # public: only files their contributor uploaded count.
    thief = w3.eth.accounts[6]
    datanets = module(w3, "IDatanets")
    theirs = datanets.functions.createDatanet("Mine", "", b"\0" * 32, [], "text", "", True)
    transact(w3, theirs, dev_key(6))
    stolen = datanets.functions.datanetCount().call()
    fee = datanets.functions.publishFee(stolen).call()
    transact(w3, datanets.functions.publish(stolen), dev_key(6), value=fee)
    transact(w3, datanets.functions.contribute(stolen, mine, 20, 100, ""), dev_key(6))
    assert rows(node, mine).status_code == 401
    assert rows(node, mine, key(6)).status_code == 403, thief
    # The node's own indexer reads it: the private version is indexed.
    status = wait_for(f"{node.api_url}/datanets/{datanet}/versions/1/index",
                      lambda b: b.get("status") in ("ready", "failed"))
    assert status["status"] == "ready", status


def test_access_is_requested_approved_split_to_the_wei_and_lets_the_model_train(market):
    node, w3, datanet, model, contributed = market
    datanets, settlement = module(w3, "IDatanets"), module(w3, "ISettlement")
    total_rows = sum(c["rows"] for c in contributed)
    fee = datanets.functions.accessFee(model, datanet, 1).call()
    assert fee == PRICE * total_rows

    # A job is refused before access, as its registration would be.
    job = {"model": model, "datanets": [f"{datanet}@1"], "rank": 4, "targets": "q,v", "epochs": 1,
           "context": 64, "influenceDims": 0}
    early = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(CREATOR), timeout=30)
    assert early.status_code == 402 and "datanet access request" in early.json()["error"], early.text

    refused = cli(node, "datanet", "access", "request", str(model), f"{datanet}@1",
                  "--account", str(OWNER), check=False)
    assert refused.returncode != 0 and "NotModelCreator" in refused.stderr
    creator = w3.eth.accounts[CREATOR]
    first = cli_json(node, "datanet", "access", "request", str(model), f"{datanet}@1", "--account", str(CREATOR))
    assert first["status"] == "pending" and int(first["fee"]) == fee
    twice = cli(node, "datanet", "access", "request", str(model), f"{datanet}@1", "--account", str(CREATOR),
                check=False)
    assert "AccessPending" in twice.stderr
    not_owner = cli(node, "datanet", "access", "approve", first["requestId"], "--account", str(CREATOR),
                    check=False)
    assert "NotOwner" in not_owner.stderr
    before = w3.eth.get_balance(creator)
    cli(node, "datanet", "access", "refuse", first["requestId"], "--account", str(OWNER))
    assert w3.eth.get_balance(creator) == before + fee  # refunded

    second = cli_json(node, "datanet", "access", "request", str(model), f"{datanet}@1", "--account", str(CREATOR))
    payees = [w3.eth.accounts[n] for n in (OWNER, *CONTRIBUTORS)]
    rewards = {a: settlement.functions.rewards(a).call() for a in payees}
    treasury = w3.eth.get_balance("0x4F4c000000000000000000000000000000000008")
    approved = cli_json(node, "datanet", "access", "approve", second["requestId"], "--account", str(OWNER))
    params = datanets.functions.accessParams().call()
    to_treasury, to_owner = fee * params[0] // PPM, fee * params[1] // PPM
    pool = fee - to_treasury - to_owner
    shares = {w3.eth.accounts[n]: pool * c["rows"] // total_rows for n, c in zip(CONTRIBUTORS, contributed)}
    dust = pool - sum(shares.values())
    assert int(approved["toContributors"]) == sum(shares.values())
    assert int(approved["toOwner"]) == to_owner and int(approved["toTreasury"]) == to_treasury + dust
    for account, share in shares.items():
        assert settlement.functions.rewards(account).call() - rewards[account] == share
    assert settlement.functions.rewards(w3.eth.accounts[OWNER]).call() - rewards[payees[0]] == to_owner
    receipt = w3.eth.get_transaction_receipt(approved["tx"])
    base_fees = receipt.gasUsed * w3.eth.get_block(receipt.blockNumber).baseFeePerGas
    assert w3.eth.get_balance("0x4F4c000000000000000000000000000000000008") - treasury == \
        to_treasury + dust + base_fees
    shown = cli_json(node, "datanet", "access", "show", str(model), str(datanet))
    assert shown["grantedVersion"] == 1 and int(shown["paid"]) == fee and shown["pendingRequest"] is None

    # Now the creator reads for its model, and its training job trains and registers.
    mine = contributed[0]["contentHash"]
    assert rows(node, mine, key(CREATOR), model=model).status_code == 200
    done = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(CREATOR), timeout=30).json()
    done = wait_for(f"{node.api_url}/jobs/{done['id']}", lambda b: b["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert model_info(w3, model)["artifactCount"] == 1

    # Every contributor claims what the access earned it.
    for n in CONTRIBUTORS:
        account = w3.eth.accounts[n]
        owed = settlement.functions.rewards(account).call()
        claimed = cli_json(node, "settle", "claim", "--account", str(n))
        assert settlement.functions.rewards(account).call() == 0 and owed > 0, claimed


def test_a_training_job_is_quoted_held_from_escrow_and_paid_only_for_a_new_adapter(base, tmp_path):  # noqa: F811
    path, files = base
    node = Node(extra_args=("--base", str(path), "--training-price", "0.01", "--trainer-account", "1"))
    try:
        w3 = client(node)
        settlement = module(w3, "ISettlement")
        datanet = cli_json(node, "datanet", "create", "--name", "Paid compute", "--account", "0")["datanetId"]
        ids = [cli_json(node, "datanet", "contribute", datanet, f, "--account", "3")["contributionId"] for f in files]
        cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
        model = int(cli_json(node, "model", "propose", "--name", "paid", "--base-model", "tiny",
                             "--datanet", datanet, "--account", str(CREATOR))["modelId"])
        cli(node, "model", "approve", model, "--account", "0")
        job = {"model": model, "datanets": [f"{datanet}@1"], "rank": 4, "targets": "q,v", "epochs": 2,
               "context": 64, "influenceDims": 0, "seed": 7}
        url = f"{node.api_url}/jobs/train"

        quote = requests.post(f"{url}?quote", json=job, headers=key(CREATOR), timeout=60)
        assert quote.status_code == 200, quote.text
        quote = quote.json()
        assert quote["status"] == "quoted" and quote["trainingTokens"] > 0
        assert int(quote["fee"]) == 10**16 * quote["trainingTokens"] // 1000
        assert quote["trainer"].lower() == w3.eth.accounts[1].lower()
        assert requests.get(f"{node.api_url}/jobs", timeout=30).json() == []  # a quote queues nothing
        by_cli = cli_json(node, "job", "quote", "--model", str(model), "--datanet", f"{datanet}@1", "--rank", "4",
                          "--targets", "q,v", "--epochs", "2", "--context", "64", "--seed", "7",
                          "--account", str(CREATOR))
        assert by_cli["fee"] == quote["fee"]
        unsigned = cli(node, "job", "quote", "--model", str(model), "--datanet", f"{datanet}@1", check=False)
        assert unsigned.returncode != 0 and "--account N" in unsigned.stderr

        typo = requests.post(f"{url}?quotes", json=job, headers=key(CREATOR), timeout=60)
        assert typo.status_code == 400 and "?quote" in typo.json()["error"], typo.text
        broke = requests.post(url, json=job, headers=key(CREATOR), timeout=60)
        assert broke.status_code == 402 and "settle deposit" in broke.json()["error"], broke.text

        creator = w3.eth.accounts[CREATOR]
        cli(node, "settle", "deposit", "10", "--account", str(CREATOR))
        escrow = settlement.functions.balanceOf(creator).call()
        trainer = w3.eth.accounts[1]
        first = requests.post(url, json=job, headers=key(CREATOR), timeout=60).json()
        assert first["payment"]["status"] == "held", first
        fee = int(first["payment"]["fee"])
        assert settlement.functions.balanceOf(creator).call() == escrow - fee
        hold = settlement.functions.trainingHold(first["payment"]["holdId"]).call()
        assert (hold[0], hold[1], hold[3], hold[6]) == (creator, trainer, fee, 1)  # Held
        done = wait_for(f"{node.api_url}/jobs/{first['id']}", lambda b: b["status"] in ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        done = wait_for(f"{node.api_url}/jobs/{first['id']}", lambda b: b["payment"]["status"] != "held")
        assert done["payment"]["status"] == "paid", done
        shown = cli(node, "job", "show", str(first["id"])).stdout
        assert "succeeded" in shown and "paid to the trainer" in shown, shown
        paid = w3.eth.get_transaction_receipt(done["payment"]["settleTx"])
        event = settlement.events.TrainingPaid().process_receipt(paid)[0].args
        assert (event.trainer, event.amount) == (trainer, fee)

        # The same job again trains the same weights: nothing new is registered, so the fee
        # goes back to the creator.
        again = requests.post(url, json=job, headers=key(CREATOR), timeout=60).json()
        assert again["payment"]["status"] == "held", again
        again = wait_for(f"{node.api_url}/jobs/{again['id']}",
                         lambda b: b["status"] in ("succeeded", "failed") and b["payment"]["status"] != "held")
        assert again["payment"]["status"] == "refunded", again
        assert settlement.functions.balanceOf(creator).call() == escrow - fee

        # A job cancelled (queued or running) is refunded too.
        long = {**job, "epochs": 80, "seed": 8}
        cancelled = requests.post(url, json=long, headers=key(CREATOR), timeout=60).json()
        assert cancelled["payment"]["status"] == "held", cancelled
        stop = requests.delete(f"{node.api_url}/jobs/{cancelled['id']}", headers=key(CREATOR), timeout=30)
        assert stop.status_code in (200, 202), stop.text
        cancelled = wait_for(f"{node.api_url}/jobs/{cancelled['id']}",
                             lambda b: b["status"] == "cancelled" and b["payment"]["status"] != "held")
        assert cancelled["payment"]["status"] == "refunded", cancelled
        assert settlement.functions.balanceOf(creator).call() == escrow - fee
    finally:
        node.stop()


def test_approval_refuses_a_contribution_that_declares_more_rows_than_its_file_has(market, tmp_path):
    """Access fees pay per declared row: `datanet approve` checks each declaration against the
    file the node holds."""
    node, w3, datanet, _, _ = market
    small = tmp_path / "small.txt"
    small.write_text("One row only.\n")
    uploaded = cli_json(node, "datanet", "upload", str(datanet), str(small), "--account", str(CONTRIBUTORS[0]))
    datanets = module(w3, "IDatanets")
    receipt, _ = transact(w3, datanets.functions.contribute(datanet, uploaded["contentHash"], 900,
                                                            uploaded["size"], ""), dev_key(CONTRIBUTORS[0]))
    inflated = datanets.events.Contributed().process_receipt(receipt)[0].args.contributionId
    refused = cli(node, "datanet", "approve", str(datanet), str(inflated), "--account", str(OWNER), check=False)
    assert refused.returncode != 0 and "declares 900 rows" in refused.stderr, refused.stderr
    assert datanets.functions.getContribution(inflated).call()[7] == 0  # still pending
    cli(node, "datanet", "reject", str(datanet), str(inflated), "--account", str(OWNER))
