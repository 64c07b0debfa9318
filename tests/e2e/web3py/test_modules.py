"""What a web3.py user does with OpenLedger's protocol modules, through their JSON ABIs: create
and publish a datanet, upload files to the node's content API and contribute them, approve a version, register and deploy a model, deposit into
escrow, sign an EIP-712 inference order with eth_account, settle it as the operator and claim the
rewards, checking every balance to the wei against an independent computation of the split."""

import json

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3
from web3.exceptions import ContractCustomError

from conftest import DEV_KEYS, OPEN, ROOT, Node, base_tx, send

ABI_DIR = ROOT / "crates" / "protocol" / "abi"
ADDRESSES = {
    "IDatanets": "0x4f4c000000000000000000000000000000000001",
    "IModels": "0x4f4c000000000000000000000000000000000002",
    "ISettlement": "0x4f4c000000000000000000000000000000000003",
    "IGOPEN": "0x4f4c000000000000000000000000000000000004",
    "IGovernor": "0x4f4c000000000000000000000000000000000005",
    "IStaking": "0x4f4c000000000000000000000000000000000006",
    "IFeedback": "0x4f4c000000000000000000000000000000000007",
    "ITreasury": "0x4f4c000000000000000000000000000000000008",
}
TREASURY = Web3.to_checksum_address("0x4f4c000000000000000000000000000000000008")
PPM = 1_000_000

OWNER, CONTRIBUTOR, CREATOR = DEV_KEYS  # the owner is also the dev genesis's protocol admin
OPERATOR = "0x" + "0a" * 32


def module(w3: Web3, name: str):
    abi = json.loads((ABI_DIR / f"{name}.json").read_text())
    return w3.eth.contract(address=Web3.to_checksum_address(ADDRESSES[name]), abi=abi)


def transact(w3: Web3, call, key: str, value: int = 0):
    """Sends a module call signed by `key`; returns the receipt and the OPEN it cost in gas."""
    sender = Account.from_key(key).address
    tx = call.build_transaction({**base_tx(w3, key), "from": sender, "value": value})
    receipt = send(w3, tx, key)
    assert receipt.status == 1, receipt
    return receipt, receipt.gasUsed * receipt.effectiveGasPrice


def address(key: str) -> str:
    return Account.from_key(key).address


def expected_split(fee: int, platform_fee: int, shares, weights, feedback_ppm: int):
    """DESIGN §4's split, computed independently: every part rounded down, dust to the treasury,
    except the validators' share of the platform fee."""
    rest = fee - platform_fee
    creator, stakers, pool = (rest * share // PPM for share in shares)
    contributors = [pool * w // PPM for w in weights]
    feedback = platform_fee * feedback_ppm // PPM
    treasury = fee - creator - stakers - sum(contributors) - feedback
    return {"creator": creator + stakers, "contributors": contributors, "treasury": treasury, "feedback": feedback}


def sign_order(w3: Web3, user, model: int, nonce: int, max_fee: int = 2 * OPEN):
    """A user's EIP-712 InferenceOrder for `model`, as a tuple for the ABI, and its signature."""
    order = {"user": user.address, "modelId": model, "maxFee": max_fee, "nonce": nonce,
             "expiry": w3.eth.get_block("latest").timestamp + 3_600}
    signed = Account.sign_typed_data(
        user.key,
        domain_data={"name": "OpenLedger Settlement", "version": "1", "chainId": w3.eth.chain_id,
                     "verifyingContract": Web3.to_checksum_address(ADDRESSES["ISettlement"])},
        message_types={"InferenceOrder": [
            {"name": "user", "type": "address"}, {"name": "modelId", "type": "uint256"},
            {"name": "maxFee", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
            {"name": "expiry", "type": "uint64"}]},
        message_data=order,
    )
    return (order["user"], order["modelId"], order["maxFee"], order["nonce"], order["expiry"]), signed


def inference_receipt(market: dict, weights, prompt: bytes = b"\x01" * 32) -> tuple:
    """The operator's receipt of 1,500 prompt and 200 generated tokens over the market's two
    contributions, served by the model's first (and only) artifact version."""
    return (1_500, 200, prompt, b"\x02" * 32, 1, market["datanet"], market["version"], 1,
            market["contributions"], weights)


def upload(node, datanet_id: int, name: str, content: bytes, key: str = OWNER) -> requests.Response:
    """Uploads a file signed by `key`'s account, as the README says: an EIP-191 signature of the
    file's keccak-256, its name, the datanet and the chain."""
    chain_id = int(requests.post(node.http_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                                      "params": []}, timeout=30).json()["result"], 16)
    message = (f"OpenLedger upload of file {Web3.keccak(content).to_0x_hex()} named {name} "
               f"to datanet {datanet_id} on chain {chain_id}")
    signature = Account.sign_message(encode_defunct(text=message), key).signature.to_0x_hex()
    return requests.post(f"{node.api_url}/datanets/{datanet_id}/files", files={"file": (name, content)},
                         headers={"X-OpenLedger-Signature": signature}, timeout=30)


FILES = {
    CONTRIBUTOR: ("notes.md", b"# Triage\n\nChest pain with sweating: call for help.\n\nFever in infants: see a doctor.\n"),
    OWNER: ("qa.jsonl", b'{"q": "What lowers fever?", "a": "Paracetamol."}\n{"q": "Normal heart rate?", "a": "60-100"}\n'
                        b'{"q": "Is sugar a vitamin?", "a": "No."}\n'),
}


@pytest.fixture(scope="module")
def market(w3, node):
    return build_market(w3, node)


def build_market(w3, node) -> dict:
    """A published datanet with one approved version holding two contributions, and a model
    trained on it and deployed with a dedicated operator account."""
    datanets, models = module(w3, "IDatanets"), module(w3, "IModels")
    transact(w3, datanets.functions.createDatanet(
        "Clinical notes", "De-identified clinical notes", b"\xde" * 32, ["medical", "text"], "text", "CC-BY-4.0", True,
    ), OWNER)
    datanet_id = datanets.functions.datanetCount().call()
    fee = datanets.functions.publishFee(datanet_id).call()
    transact(w3, datanets.functions.publish(datanet_id), OWNER, value=fee)

    stats_before = datanets.functions.contributorStats(address(CONTRIBUTOR)).call()
    contributions = []
    for key, (name, content) in FILES.items():
        response = upload(node, datanet_id, name, content, key)
        assert response.status_code == 201, response.text
        up = response.json()
        receipt, _ = transact(w3, datanets.functions.contribute(
            datanet_id, up["contentHash"], up["rows"], up["size"], "CC-BY-4.0"), key)
        event = datanets.events.Contributed().process_receipt(receipt)[0]
        assert (event.args.rows, event.args.size) == (up["rows"], len(content))
        contributions.append(event.args.contributionId)
    fee = datanets.functions.versionFee(datanet_id, contributions).call()
    treasury_before = w3.eth.get_balance(TREASURY)
    receipt, _ = transact(w3, datanets.functions.approve(datanet_id, contributions), OWNER, value=fee + OPEN)
    version = datanets.events.VersionCreated().process_receipt(receipt)[0].args
    assert version.contributionIds == contributions
    # The version fee reached the treasury, beside the block's base fees; the excess came back.
    base_fees = receipt.gasUsed * w3.eth.get_block(receipt.blockNumber).baseFeePerGas
    assert w3.eth.get_balance(TREASURY) - treasury_before == fee + base_fees
    assert w3.eth.get_balance(datanets.address) == 0

    receipt, _ = transact(w3, models.functions.proposeModel(
        "clinical-lora", "openledger/tiny-llama", [datanet_id], b"\x11" * 32), CREATOR)
    model_id = models.events.ModelProposed().process_receipt(receipt)[0].args.modelId
    transact(w3, models.functions.approveModel(model_id), OWNER)
    transact(w3, models.functions.registerArtifact(model_id, b"\xaa" * 32, [version.version], b"\x33" * 32), CREATOR)
    operator = Account.from_key(OPERATOR)
    # The operator pays gas for settlements and stakes the collateral deploying requires.
    send(w3, {**base_tx(w3, OWNER), "to": operator.address, "value": 50 * OPEN, "gas": 21_000,
              "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9})
    staking = module(w3, "IStaking")
    minimum = staking.functions.minimumStake(model_id).call()
    deploy = models.functions.deploy(model_id, operator.address, 640 * OPEN // 1000, OPEN // 10)
    with pytest.raises(ContractCustomError) as refused:
        deploy.call({"from": address(CREATOR)})
    selector = Web3.keccak(text="InsufficientOperatorStake(uint256,uint256,uint256)")[:4].hex()
    assert selector in str(refused.value.data) and f"{minimum:064x}" in str(refused.value.data)
    transact(w3, staking.functions.stakeOperator(model_id), OPERATOR, value=2 * minimum)
    transact(w3, deploy, CREATOR)
    return {"datanet": datanet_id, "version": version.version, "contributions": contributions, "model": model_id,
            "stats_before": stats_before}


def test_the_content_api_serves_rows_and_refuses_bad_uploads(node, market):
    up = upload(node, market["datanet"], "again.jsonl", FILES[OWNER][1]).json()
    assert up["rows"] == 3 and up["format"] == "jsonl"
    rows = requests.get(f"{node.api_url}/contributions/{up['contentHash']}/rows", timeout=30).json()
    assert rows["rows"][2] == '{"q": "Is sugar a vitamin?", "a": "No."}'
    manifest = requests.get(f"{node.api_url}/contributions/{up['contentHash']}", timeout=30).json()
    assert len(manifest["rowHashes"]) == 3 and manifest["contentHash"] == up["contentHash"]

    refused = {
        ("notes.pdf", b"%PDF-1.7"): (415, "unsupported file type"),
        ("notes.txt", b"\xff\xfe not text"): (400, "not UTF-8"),
        ("notes.txt", b"\n \n"): (400, "no rows"),
        ("bad.jsonl", b'{"ok": 1}\n{nope\n'): (400, "line 2"),
        ("big.txt", b"x" * (1 << 20 | 1)): (413, ""),
    }
    for (name, content), (status, message) in refused.items():
        response = upload(node, market["datanet"], name, content)
        assert response.status_code == status, (name, response.text)
        assert message in response.json()["error"]
    assert upload(node, 999, "notes.txt", b"hello").status_code == 404
    missing = "0x" + "ab" * 32
    assert requests.get(f"{node.api_url}/contributions/{missing}", timeout=30).status_code == 404


def test_lifecycle_views_and_custom_errors(w3, market):
    datanets, models = module(w3, "IDatanets"), module(w3, "IModels")
    datanet = datanets.functions.getDatanet(market["datanet"]).call()
    assert datanet[2] == "Clinical notes" and datanet[5] == ["medical", "text"]
    model = models.functions.getModel(market["model"]).call()
    assert model[2] == 4  # Deployed
    submitted, approved, rejected, _ = market["stats_before"]
    stats = datanets.functions.contributorStats(address(CONTRIBUTOR)).call()
    assert stats[:3] == (submitted + 1, approved + 1, rejected)
    # Approving again is governance's business: the custom error names the caller.
    with pytest.raises(ContractCustomError) as error:
        models.functions.approveModel(market["model"]).call({"from": address(CREATOR)})
    selector = Web3.keccak(text="NotGovernance(address)")[:4].hex()
    assert selector in str(error.value.data)
    assert address(CREATOR)[2:].lower() in str(error.value.data).lower()


def test_a_signed_order_is_settled_split_and_claimed_to_the_wei(w3, market):
    settlement = module(w3, "ISettlement")
    user = Account.create()
    held_before = w3.eth.get_balance(settlement.address)
    send(w3, {**base_tx(w3, OWNER), "to": user.address, "value": 100 * OPEN, "gas": 21_000,
              "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9})
    _, gas = transact(w3, settlement.functions.deposit(), user.key, value=50 * OPEN)
    assert settlement.functions.balanceOf(user.address).call() == 50 * OPEN
    assert w3.eth.get_balance(user.address) == 50 * OPEN - gas

    order_tuple, signed = sign_order(w3, user, market["model"], 1)
    assert settlement.functions.orderDigest(order_tuple).call() == signed.message_hash
    weights = [250_000, 750_000]
    receipt_tuple = inference_receipt(market, weights)

    fee = settlement.functions.quote(market["model"], 1_500, 200).call()
    platform_fee = settlement.functions.platformFee().call()
    assert fee == 1_500 * 640 * OPEN // 1000 // 1000 + 200 * (OPEN // 10) // 1000 + platform_fee
    feedback = module(w3, "IFeedback")
    feedback_ppm = feedback.functions.params().call()[0]
    expected = expected_split(fee, platform_fee, settlement.functions.shares().call(), weights, feedback_ppm)
    treasury_before = w3.eth.get_balance(TREASURY)
    rewards_before = {k: settlement.functions.rewards(address(k)).call() for k in (CREATOR, CONTRIBUTOR)}
    receipt, _ = transact(w3, settlement.functions.settle(order_tuple, signed.signature, receipt_tuple), OPERATOR)
    # The treasury also received this block's base fees: the operator's transaction alone.
    base_fees = receipt.gasUsed * w3.eth.get_block(receipt.blockNumber).baseFeePerGas
    assert w3.eth.get_balance(TREASURY) - treasury_before == expected["treasury"] + base_fees
    # The rest of the platform fee is the reward of validators who rate this inference.
    recorded = feedback.events.ReceiptRecorded().process_receipt(receipt)[0].args
    assert recorded.reward == expected["feedback"] > 0
    assert recorded.receiptId == settlement.events.Settled().process_receipt(receipt)[0].args.orderHash
    assert settlement.functions.balanceOf(user.address).call() == 50 * OPEN - fee
    assert settlement.functions.rewards(address(CREATOR)).call() - rewards_before[CREATOR] == expected["creator"]
    accrued_contributor = settlement.functions.rewards(address(CONTRIBUTOR)).call()
    assert accrued_contributor - rewards_before[CONTRIBUTOR] == expected["contributors"][0]
    accrued = settlement.events.RewardAccrued().process_receipt(receipt)
    assert [e.args.account for e in accrued] == [address(CREATOR)] * 2 + [address(CONTRIBUTOR), address(OWNER)]

    # The nonce is spent: the same order cannot be charged twice.
    with pytest.raises(ContractCustomError):
        settlement.functions.settle(order_tuple, signed.signature, receipt_tuple).call(
            {"from": Account.from_key(OPERATOR).address})

    before = w3.eth.get_balance(address(CONTRIBUTOR))
    _, gas = transact(w3, settlement.functions.claim(), CONTRIBUTOR)
    assert w3.eth.get_balance(address(CONTRIBUTOR)) == before + accrued_contributor - gas
    assert settlement.functions.rewards(address(CONTRIBUTOR)).call() == 0

    # Escrow leaves only after its unlock's delay: until then it still pays what was served.
    receipt, _ = transact(w3, settlement.functions.unlock(50 * OPEN - fee), user.key)
    unlocking = settlement.events.Unlocking().process_receipt(receipt)[0].args
    delay = settlement.functions.withdrawalDelay().call()
    assert delay > 0
    assert unlocking.releaseAt == w3.eth.get_block(receipt.blockNumber).timestamp + delay
    assert settlement.functions.escrowOf(user.address).call() == [50 * OPEN - fee, 50 * OPEN - fee,
                                                                  unlocking.releaseAt]
    with pytest.raises(ContractCustomError) as early:
        settlement.functions.withdraw(50 * OPEN - fee).call({"from": user.address})
    assert Web3.keccak(text="StillLocked(uint64,uint64)")[:4].hex() in str(early.value.data)
    # What the module holds more than before is exactly the escrow and the rewards left unclaimed.
    unclaimed = expected["creator"] + expected["contributors"][1] - rewards_before[CONTRIBUTOR]
    assert w3.eth.get_balance(settlement.address) - held_before == unclaimed + 50 * OPEN - fee


def test_uploads_over_the_daily_quota_are_refused(tmp_path):
    """A node whose genesis allows each datanet one file a day refuses the second upload."""
    owner = address(OWNER)
    genesis = {
        "chainId": 4242, "alloc": {owner: {"balance": hex(1000 * OPEN)}},
        "protocol": {"admin": owner, "datanetDailyFiles": 1},
    }
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis))
    node = Node(extra_args=("--genesis", str(path)))
    try:
        w3 = Web3(Web3.HTTPProvider(node.http_url, request_kwargs={"timeout": 30}))
        datanets = module(w3, "IDatanets")
        transact(w3, datanets.functions.createDatanet("q", "", b"\0" * 32, [], "text", "", True), OWNER)
        transact(w3, datanets.functions.publish(1), OWNER, value=datanets.functions.publishFee(1).call())
        first = upload(node, 1, "a.txt", b"first file").json()
        transact(w3, datanets.functions.contribute(1, first["contentHash"], first["rows"], first["size"], ""), OWNER)
        # The datanet's one file is used; the owner's own quota still has 100 MiB less this file.
        assert list(datanets.functions.quotaLeft(1, owner).call()) == [(100 << 20) - first["size"], 0]
        refused = upload(node, 1, "b.txt", b"second file")
        assert refused.status_code == 429, refused.text
        assert "over the daily quota" in refused.json()["error"]
    finally:
        node.stop()
