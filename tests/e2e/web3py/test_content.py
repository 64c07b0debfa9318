"""The content API as an abuser and a careless user would meet it: uploads must say whose they
are, go only where the uploader may contribute, count against quotas as soon as they are stored,
and are collected when nobody contributes them; rows are read a page at a time; every refusal is a
JSON `error`."""

import json
import time

import requests
from eth_account import Account
from web3 import Web3

from conftest import DEV_KEYS, OPEN, TIMEOUT, Node, client
from test_modules import OWNER, address, module, transact, upload

STRANGER = DEV_KEYS[2]


def new_datanet(w3: Web3, public: bool = True, publish: bool = True) -> int:
    datanets = module(w3, "IDatanets")
    transact(w3, datanets.functions.createDatanet("uploads", "", b"\0" * 32, [], "text", "", public), OWNER)
    datanet_id = datanets.functions.datanetCount().call()
    if publish:
        transact(w3, datanets.functions.publish(datanet_id), OWNER, value=datanets.functions.publishFee(datanet_id).call())
    return datanet_id


def stored(node, content_hash: str) -> bool:
    return requests.get(f"{node.api_url}/contributions/{content_hash}", timeout=TIMEOUT).status_code == 200


def post_file(node, datanet_id: int, content: bytes, headers=None) -> requests.Response:
    return requests.post(f"{node.api_url}/datanets/{datanet_id}/files", files={"file": ("a.txt", content)},
                         headers=headers or {}, timeout=TIMEOUT)


def test_an_upload_must_say_whose_it_is(node, w3):
    datanet_id = new_datanet(w3)
    anonymous = post_file(node, datanet_id, b"nobody's file")
    assert anonymous.status_code == 401 and "X-OpenLedger-Signature".lower() in anonymous.json()["error"].lower()
    bad_key = post_file(node, datanet_id, b"nobody's file", {"Authorization": "Bearer dev-999"})
    assert bad_key.status_code == 401 and "unknown API key" in bad_key.json()["error"]
    garbage = post_file(node, datanet_id, b"x", {"X-OpenLedger-Signature": "0x1234"})
    assert garbage.status_code == 401
    # A dev key stands for its dev account; a signature for the account that signed.
    by_key = post_file(node, datanet_id, b"a dev key's file", {"Authorization": "Bearer dev-1"})
    assert by_key.status_code == 201 and by_key.json()["uploader"] == address(DEV_KEYS[1])
    signed = upload(node, datanet_id, "b.txt", b"a signed file", STRANGER)
    assert signed.status_code == 201 and signed.json()["uploader"] == address(STRANGER)
    # A signature made for another file recovers another account, which is not the contributor.
    claimed = requests.post(
        f"{node.api_url}/datanets/{datanet_id}/files?contributor={address(STRANGER)}",
        files={"file": ("c.txt", b"a different file")},
        headers={"X-OpenLedger-Signature": signed.request.headers["X-OpenLedger-Signature"]}, timeout=TIMEOUT)
    assert claimed.status_code == 403 and "not from the contributor" in claimed.json()["error"]


def test_uploads_go_only_where_the_uploader_may_contribute(node, w3):
    draft = new_datanet(w3, publish=False)
    refused = upload(node, draft, "a.txt", b"to a draft", OWNER)
    assert refused.status_code == 409 and "draft" in refused.json()["error"]
    private = new_datanet(w3, public=False)
    refused = upload(node, private, "a.txt", b"to a private datanet", STRANGER)
    assert refused.status_code == 403 and "private" in refused.json()["error"]
    # A one-row file's content hash is its row's hash, keccak256(0x00 . row): nothing was stored.
    assert not stored(node, Web3.keccak(b"\x00to a private datanet").to_0x_hex())
    transact(w3, module(w3, "IDatanets").functions.setContributor(private, address(STRANGER), True), OWNER)
    assert upload(node, private, "a.txt", b"to a private datanet", STRANGER).status_code == 201
    assert upload(node, private, "a.txt", b"the owner's own", OWNER).status_code == 201


def test_files_of_too_many_rows_are_refused(node, w3):
    datanet_id = new_datanet(w3)
    tiny_rows = b"a\n\n" * 100_001
    refused = upload(node, datanet_id, "tiny.txt", tiny_rows, OWNER)
    assert refused.status_code == 400 and "more than 100000 rows" in refused.json()["error"]


def test_rows_are_paged_and_bad_requests_get_json_errors(node, w3):
    datanet_id = new_datanet(w3)
    rows = [f"row {i}" for i in range(2_500)]
    up = upload(node, datanet_id, "many.txt", "\n\n".join(rows).encode(), OWNER).json()
    url = f"{node.api_url}/contributions/{up['contentHash']}/rows"
    page = requests.get(url, params={"offset": 2_000, "limit": 5_000}, timeout=TIMEOUT).json()
    assert page["total"] == 2_500 and page["rows"] == rows[2_000:2_500]
    first = requests.get(url, timeout=TIMEOUT).json()
    assert first["rows"] == rows[:1_000]
    for response in (
        requests.get(url, params={"offset": "many"}, timeout=TIMEOUT),
        requests.post(f"{node.api_url}/datanets/{datanet_id}/files", data=b"not multipart", timeout=TIMEOUT),
        requests.post(f"{node.api_url}/datanets/{datanet_id}/files", data=b"--x\r\n",
                      headers={"Content-Type": "multipart/form-data; boundary=x",
                               "Authorization": "Bearer dev-0"}, timeout=TIMEOUT),
    ):
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"].startswith("application/json"), response.text
        assert response.json()["error"]


def test_an_account_that_cannot_pay_to_contribute_cannot_upload(node, w3):
    datanet_id = new_datanet(w3)
    nobody = Account.create()
    refused = upload(node, datanet_id, "a.txt", b"a sybil's file", nobody.key)
    assert refused.status_code == 402 and "can contribute" in refused.json()["error"]
    # A signature made for another file recovers some other account, which holds nothing either.
    other = upload(node, datanet_id, "a.txt", b"one file", OWNER)
    moved = requests.post(f"{node.api_url}/datanets/{datanet_id}/files", files={"file": ("b.txt", b"another")},
                          headers={"X-OpenLedger-Signature": other.request.headers["X-OpenLedger-Signature"]},
                          timeout=TIMEOUT)
    assert moved.status_code == 402, moved.text


def test_uploads_count_at_once_and_are_collected_when_nobody_contributes(own_node, own_w3):
    node, w3 = own_node, own_w3
    datanets = module(w3, "IDatanets")
    datanet_id = new_datanet(w3)
    kept = upload(node, datanet_id, "kept.txt", b"contributed, so kept", OWNER).json()
    transact(w3, datanets.functions.contribute(datanet_id, kept["contentHash"], kept["rows"], kept["size"], ""), OWNER)
    # The owner may upload 100 files a day by default: upload until that is used, without
    # contributing any, and the next upload is refused though the chain has recorded one file.
    limit = datanets.functions.quotaLeft(datanet_id, address(OWNER)).call()[1]
    assert 0 < limit <= 100
    hashes = []
    for i in range(limit):
        response = post_file(node, datanet_id, f"file {i}".encode(), {"Authorization": "Bearer dev-0"})
        assert response.status_code == 201, response.text
        hashes.append(response.json()["contentHash"])
    refused = upload(node, datanet_id, "one-more.txt", b"one more", OWNER)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"].startswith("over the daily quota")
    # Another account is not held back by the owner's uploads.
    assert upload(node, datanet_id, "theirs.txt", b"someone else's", STRANGER).status_code == 201
    # A day later, uploads nobody contributed are gone and the contributed one stays.
    latest = w3.eth.get_block("latest").timestamp
    w3.provider.make_request("evm_increaseTime", [25 * 3600])
    w3.provider.make_request("evm_mine", [latest + 25 * 3600])
    deadline = time.monotonic() + TIMEOUT
    while any(stored(node, h) for h in hashes[:5]):
        assert time.monotonic() < deadline, "uploads nobody contributed were kept past a day"
        time.sleep(0.2)
    assert stored(node, kept["contentHash"])
    assert upload(node, datanet_id, "one-more.txt", b"one more", OWNER).status_code == 201


def test_a_datanets_quota_counts_uploads_not_yet_contributed(tmp_path):
    """A node whose genesis allows each datanet two files a day: two uploads by two accounts,
    neither contributed, use it up for everyone."""
    accounts = {address(k): {"balance": hex(1000 * OPEN)} for k in (OWNER, STRANGER)}
    genesis = {"chainId": 4243, "alloc": accounts, "protocol": {"admin": address(OWNER), "datanetDailyFiles": 2}}
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis))
    node = Node(extra_args=("--genesis", str(path)))
    try:
        w3 = client(node)
        datanet_id = new_datanet(w3)
        assert upload(node, datanet_id, "a.txt", b"first", OWNER).status_code == 201
        assert upload(node, datanet_id, "b.txt", b"second", STRANGER).status_code == 201
        refused = upload(node, datanet_id, "c.txt", b"third", STRANGER)
        assert refused.status_code == 429 and "0 files left" in refused.json()["error"], refused.text
    finally:
        node.stop()
