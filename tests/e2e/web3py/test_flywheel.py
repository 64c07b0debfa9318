"""The AI services inside `openledger dev`: an approved datanet version gets its span index built
in the background, and a training job over HTTP (POST /jobs/train, with a dev API key) trains an
adapter on it and registers it on-chain as the model's artifact. Checked with web3.py and HTTP."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from web3 import Web3

from conftest import BINARY, Node, client, free_port
from test_jobs import TRAINED, cli, cli_json, model_info, tiny_base
from test_modules import module

DEADLINE = 240  # seconds: a bound on waiting for background work, never a pacing assumption


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("flywheel"))


@pytest.fixture(scope="module")
def setup(base):
    path, files = base
    node = Node(extra_args=("--base", str(path)))
    yield node, client(node), files
    node.stop()


class Restartable:
    """A dev node on a data directory that outlives it, for crash tests."""

    def __init__(self, datadir: Path, base: Path):
        self.datadir, self.base, self.proc = datadir, base, None

    def start(self, block_time: str = "0"):
        self.port, self.api_port = free_port(), free_port()
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        log = open(self.datadir.parent / "node.log", "a")
        self.proc = subprocess.Popen(
            [str(BINARY), "dev", "--datadir", str(self.datadir), "--rpc-addr", f"127.0.0.1:{self.port}",
             "--api-addr", f"127.0.0.1:{self.api_port}", "--block-time", block_time, "--base", str(self.base)],
            stdout=log, stderr=subprocess.STDOUT)
        w3 = Web3(Web3.HTTPProvider(self.http_url, request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + 60
        while True:
            try:
                w3.eth.block_number
                requests.get(f"{self.api_url}/jobs", timeout=5).raise_for_status()
                return w3
            except Exception:
                assert self.proc.poll() is None and time.monotonic() < deadline, "the node did not start"
                time.sleep(0.1)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_for(url: str, done) -> dict:
    """GETs `url` until `done(body)` holds (or the deadline passes) and returns the body."""
    deadline = time.monotonic() + DEADLINE
    while True:
        body = requests.get(url, timeout=30).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_an_approved_version_is_indexed_and_a_job_trains_and_registers_its_model(setup):
    node, w3, files = setup
    datanet = cli_json(node, "datanet", "create", "--name", "Ward notes", "--account", "0")["datanetId"]
    ids = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n + 3))["contributionId"]
           for n, f in enumerate(files)]
    index_url = f"{node.api_url}/datanets/{datanet}/versions/1/index"
    assert requests.get(index_url, timeout=30).status_code == 404  # not approved yet
    cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
    status = wait_for(index_url, lambda b: b.get("status") in ("ready", "failed"))
    assert status == {"status": "ready", "datanetId": datanet, "version": 1}
    assert (Path(node.datadir.name) / "attribution" / f"datanet-{datanet}" / "v1").is_dir()

    model = cli_json(node, "model", "propose", "--name", "ward-lora", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    cli(node, "model", "approve", model, "--account", "0")
    job = {"model": int(model), "datanets": [f"{datanet}@1"], "rank": 4, "targets": "q,v", "epochs": 1,
           "context": 64, "influenceDims": 16}
    jobs = f"{node.api_url}/jobs/train"
    unauthorized = requests.post(jobs, json=job, timeout=30)
    assert unauthorized.status_code == 401 and "API key" in unauthorized.json()["error"]
    bad = requests.post(jobs, json={**job, "datanets": ["1-1"]}, headers=key(2), timeout=30)
    assert bad.status_code == 400 and "ID@VERSION" in bad.json()["error"]
    typo = requests.post(jobs, json={**job, "epoch": 1}, headers=key(2), timeout=30)
    assert typo.status_code == 400 and "epoch" in typo.json()["error"]
    for field, value in [("lr", -1), ("alpha", -1), ("context", 0), ("epochs", 100_000_000), ("rank", 0)]:
        refused = requests.post(jobs, json={**job, field: value}, headers=key(2), timeout=30)
        assert refused.status_code == 400 and refused.json()["error"].startswith(field), refused.text

    accepted = requests.post(jobs, json=job, headers=key(2), timeout=30)
    assert accepted.status_code == 202, accepted.text
    url = f"{node.api_url}/jobs/{accepted.json()['id']}"
    done = wait_for(url, lambda b: b["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["step"] == done["totalSteps"] > 0 and len(done["losses"]) == done["totalSteps"]
    assert done["evalLossAfter"] is not None and done["tx"] is not None
    curve = requests.get(f"{url}/loss_curve.svg", timeout=30)
    assert curve.status_code == 200 and curve.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in curve.content

    info = model_info(w3, model)
    adapter = Path(node.datadir.name) / "adapters" / f"model-{model}"
    assert info["status"] == TRAINED and info["datanetVersions"] == [1]
    assert info["adapterHash"] == Web3.keccak((adapter / "adapter_model.safetensors").read_bytes())
    assert done["adapterHash"] == "0x" + info["adapterHash"].hex()

    # What the chain would refuse is refused at submission, before any training: a job for a
    # model governance has not approved, or from another account than its creator.
    served = (adapter / "adapter_model.safetensors").read_bytes()
    other = cli_json(node, "model", "propose", "--name", "other", "--base-model", "tiny",
                     "--datanet", datanet, "--account", "2")["modelId"]
    early = requests.post(jobs, json={**job, "model": int(other)}, headers=key(2), timeout=30)
    assert early.status_code == 409 and "governance approves" in early.json()["error"], early.text
    cli(node, "model", "approve", other, "--account", "0")
    stolen = requests.post(jobs, json={**job, "model": int(other)}, headers=key(1), timeout=30)
    assert stolen.status_code == 403 and "creator" in stolen.json()["error"], stolen.text
    unborn = requests.post(jobs, json={**job, "model": int(other), "datanets": [f"{datanet}@2"]}, headers=key(2),
                           timeout=30)
    assert unborn.status_code == 400 and f"there is no {datanet}@2" in unborn.json()["error"], unborn.text
    assert "Retired" in cli(node, "model", "retire", other, "--account", "2").stdout
    retired = requests.post(jobs, json={**job, "model": int(other)}, headers=key(2), timeout=30)
    assert retired.status_code == 409 and "not trained any more" in retired.json()["error"], retired.text
    missing = requests.post(jobs, json={**job, "model": 999}, headers=key(2), timeout=30)
    assert missing.status_code == 404
    assert model_info(w3, other)["status"] == 5  # Retired, and never trained
    assert (adapter / "adapter_model.safetensors").read_bytes() == served
    assert len(requests.get(f"{node.api_url}/jobs", timeout=30).json()) == 1
    # Trained but not deployed: OpenLoRA holds its adapter but does not list what it will not serve.
    assert requests.get(f"{node.api_url}/v1/models", timeout=120).json()["data"] == []


def key(account: int) -> dict:
    return {"Authorization": f"Bearer dev-{account}"}


def test_a_training_job_cut_by_a_crash_finishes_after_restart_and_registers_once(base, tmp_path):
    path, files = base
    node = Restartable(tmp_path / "datadir", path)
    w3 = node.start()
    try:
        datanet = cli_json(node, "datanet", "create", "--name", "Crash notes", "--account", "0")["datanetId"]
        ids = [cli_json(node, "datanet", "contribute", datanet, f, "--account", "3")["contributionId"]
               for f in files]
        cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
        model = cli_json(node, "model", "propose", "--name", "crash-lora", "--base-model", "tiny",
                         "--datanet", datanet, "--account", "2")["modelId"]
        cli(node, "model", "approve", model, "--account", "0")
        job = {"model": int(model), "datanets": [f"{datanet}@1"], "rank": 4, "targets": "q,v",
               "epochs": 30, "context": 64, "influenceDims": 16}
        accepted = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(2), timeout=30)
        job_id = accepted.json()["id"]
        at_kill = wait_for(f"{node.api_url}/jobs/{job_id}",
                           lambda b: b["step"] > 0 or b["status"] in ("succeeded", "failed"))
        print("killed at", at_kill["status"], at_kill["step"], "of", at_kill["totalSteps"])
        # Killed wherever the job is (training, sketching, registering, or done): the outcome
        # after the restart must be the same.
        node.kill()
        w3 = node.start()
        done = wait_for(f"{node.api_url}/jobs/{job_id}", lambda b: b["status"] in ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        info = model_info(w3, model)
        adapter = node.datadir / "adapters" / f"model-{model}" / "adapter_model.safetensors"
        assert info["status"] == TRAINED
        assert info["adapterHash"] == Web3.keccak(adapter.read_bytes())
        registered = module(w3, "IModels").events.ArtifactRegistered().get_logs(
            from_block=0, argument_filters={"modelId": int(model)})
        assert len(registered) == 1
    finally:
        node.kill()


def test_ctrl_c_stops_the_node_promptly_while_a_job_trains_and_the_job_resumes(base, tmp_path):
    """SIGINT during a long training job: the node exits within seconds instead of finishing the
    job first, and the job is queued again at the next start."""
    path, _ = base
    subprocess.run([str(BINARY), "data", "synth", "--contributors", "1", "--rows", "600", "--seed", "5",
                    "--out", str(tmp_path / "big")], check=True, capture_output=True, timeout=120)
    node = Restartable(tmp_path / "datadir", path)
    node.start()
    try:
        datanet = cli_json(node, "datanet", "create", "--name", "Long notes", "--account", "0")["datanetId"]
        big = next((tmp_path / "big").glob("*.jsonl"))
        contribution = cli_json(node, "datanet", "contribute", datanet, big, "--account", "3")["contributionId"]
        cli(node, "datanet", "approve", datanet, contribution, "--account", "0")
        model = cli_json(node, "model", "propose", "--name", "long-lora", "--base-model", "tiny",
                         "--datanet", datanet, "--account", "2")["modelId"]
        cli(node, "model", "approve", model, "--account", "0")
        job = {"model": int(model), "datanets": [f"{datanet}@1"], "epochs": 100, "context": 128}
        job_id = requests.post(f"{node.api_url}/jobs/train", json=job, headers=key(2), timeout=30).json()["id"]
        running = wait_for(f"{node.api_url}/jobs/{job_id}",
                           lambda b: b["step"] > 0 or b["status"] not in ("queued", "running"))
        assert running["status"] == "running" and running["totalSteps"] > 1_000, running
        node.proc.send_signal(signal.SIGINT)
        node.proc.wait(timeout=30)
        node.start()
        resumed = requests.get(f"{node.api_url}/jobs/{job_id}", timeout=30).json()
        assert resumed["status"] in ("queued", "running"), resumed
        assert any("queued again" in line["message"] for line in resumed["log"]), resumed
        cancelled = requests.delete(f"{node.api_url}/jobs/{job_id}", headers=key(2), timeout=30)
        assert cancelled.status_code in (200, 202), cancelled.text
    finally:
        node.kill()


def test_jobs_are_shared_fairly_logged_and_cancelled_by_their_owner(setup):
    node, w3, files = setup
    datanet = cli_json(node, "datanet", "create", "--name", "Fair share", "--account", "0")["datanetId"]
    ids = [cli_json(node, "datanet", "contribute", datanet, f, "--account", str(n + 3))["contributionId"]
           for n, f in enumerate(files)]
    cli(node, "datanet", "approve", datanet, *ids, "--account", "0")
    models = {}
    for account in (5, 6):
        models[account] = cli_json(node, "model", "propose", "--name", f"busy-{account}", "--base-model", "tiny",
                                   "--datanet", datanet, "--account", str(account))["modelId"]
        cli(node, "model", "approve", models[account], "--account", "0")
    jobs = f"{node.api_url}/jobs"

    def submit(account: int):
        job = {"model": int(models[account]), "datanets": [f"{datanet}@1"], "rank": 4, "targets": "q,v",
               "epochs": 100, "context": 64, "influenceDims": 0}
        return requests.post(f"{jobs}/train", json=job, headers=key(account), timeout=30)

    def status(job_id: int) -> dict:
        return requests.get(f"{jobs}/{job_id}", timeout=30).json()

    first = submit(5).json()["id"]
    wait_for(f"{jobs}/{first}", lambda b: b["status"] == "running" and b["step"] >= 1)
    waiting = [submit(5) for _ in range(5)]
    assert [r.status_code for r in waiting] == [202, 202, 202, 202, 429], [r.text for r in waiting]
    assert "jobs waiting" in waiting[-1].json()["error"]
    other = submit(6)
    assert other.status_code == 202, other.text
    other = other.json()["id"]

    # Only the owner cancels; a running job stops after its current step.
    assert requests.delete(f"{jobs}/{first}", timeout=30).status_code == 401
    assert requests.delete(f"{jobs}/{first}", headers=key(6), timeout=30).status_code == 403
    asked = requests.delete(f"{jobs}/{first}", headers=key(5), timeout=30)
    assert asked.status_code == 202 and asked.json()["cancelRequested"] is True, asked.text
    cancelled = wait_for(f"{jobs}/{first}", lambda b: b["status"] != "running")
    assert cancelled["status"] == "cancelled" and cancelled["tx"] is None, cancelled
    messages = [line["message"] for line in cancelled["log"]]
    assert messages[0] == "queued by dev-5" and "started" in messages, messages
    assert any(m.startswith("read ") and "rows" in m for m in messages), messages
    assert any(m.startswith("step 1/") for m in messages), messages
    assert messages[-1].startswith("cancelled after step"), messages
    for field in ("createdAt", "startedAt", "finishedAt"):
        assert time.strptime(cancelled[field], "%Y-%m-%dT%H:%M:%SZ"), cancelled[field]

    # The trainer goes to account 6's one job before account 5's other four.
    started = wait_for(f"{jobs}/{other}", lambda b: b["status"] != "queued")
    assert started["status"] == "running", started
    queued = [r.json()["id"] for r in waiting[:4]]
    assert all(status(job_id)["status"] == "queued" for job_id in queued)
    for job_id in queued:
        # The auth scheme is case-insensitive (RFC 7235).
        gone = requests.delete(f"{jobs}/{job_id}", headers={"Authorization": "bearer dev-5"}, timeout=30)
        assert gone.status_code == 200 and gone.json()["status"] == "cancelled", gone.text
    assert requests.delete(f"{jobs}/{other}", headers=key(6), timeout=30).status_code == 202
    assert wait_for(f"{jobs}/{other}", lambda b: b["status"] != "running")["status"] == "cancelled"
    finished = requests.delete(f"{jobs}/{first}", headers=key(5), timeout=30)
    assert finished.status_code == 409 and "nothing to cancel" in finished.json()["error"]
    assert requests.delete(f"{jobs}/999", headers=key(5), timeout=30).status_code == 404
    # Nothing was registered: both models are still Approved.
    assert all(model_info(w3, m)["status"] == TRAINED - 1 for m in models.values())
