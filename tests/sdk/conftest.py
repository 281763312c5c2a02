"""Starts the real parts for the SDK tests: the OpenAI-compatible mock provider and a fresh
`conclave serve` pointed at it, with a user and an API key."""

import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


def _spawn(args, env, timeout=30):
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == "listening":
            # Keep reading, so a chatty server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, record["addr"]
    proc.kill()
    raise RuntimeError(f"{args[0]} did not report listening within {timeout} s:\n{''.join(seen[-20:])}")


def _post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="session")
def server():
    data = tempfile.mkdtemp(prefix="conclave-sdk-")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONCLAVE_")}
    mock, mock_addr = _spawn(
        [str(TARGET / "conclave-mock-provider"), "--listen", "127.0.0.1:0", "--chunks", "6", "--api-key", "upstream-key"], base_env
    )
    env = dict(
        base_env,
        CONCLAVE_LISTEN="127.0.0.1:0",
        CONCLAVE_DATA_DIR=data,
        CONCLAVE_PROVIDER_BASE_URL=f"http://{mock_addr}/v1",
        CONCLAVE_PROVIDER_API_KEY="upstream-key",
        CONCLAVE_MODELS="mock-model,mock-large",
        CONCLAVE_PASSWORD_HASH_MEMORY_KIB="256",
        CONCLAVE_PASSWORD_HASH_ITERATIONS="1",
        CONCLAVE_LOG="warn",
        CONCLAVE_RATE_LIMIT_PER_MINUTE="100000",
    )
    conclave, addr = _spawn([str(TARGET / "conclave"), "serve"], env)
    base = f"http://{addr}"
    signed = _post(
        f"{base}/api/v1/auth/signup",
        {"email": "sdk@example.com", "password": "maple-orbit-quarry-lantern", "display_name": "SDK"},
    )
    token = signed["access_token"]
    key = _post(f"{base}/api/v1/api-keys", {"name": "sdk"}, token)["key"]
    agent = _post(
        f"{base}/api/v1/agents",
        {"name": "Counsel", "model": "mock-model", "instructions": "Answer as counsel would."},
        token,
    )
    yield {"base": base, "key": key, "token": token, "agent": agent["id"]}
    for proc in (conclave, mock):
        proc.terminate()
        proc.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)
