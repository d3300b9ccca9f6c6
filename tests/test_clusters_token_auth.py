"""Ray token authentication, as every cluster config turns it on, against a real local head.

The head runs with RAY_AUTH_MODE=token and a token file (RAY_AUTH_TOKEN_PATH), as on the Slurm
and ray-up clusters; clients are separate processes calling ray.init(address=...). HOME points
into a temp folder so no ~/.ray/auth_token is read or written. The head is stopped by killing
exactly the processes that carry this test's temp dir on their command line (never `ray stop`,
which would also stop other Ray instances on a shared machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tests.processes import alive, stop

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
CLIENT = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("RESULT", ray.get(ray.remote(lambda: 41 + 1).remote()), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_NUM_REDIS_GET_RETRIES="3")  # a refused client gives up after ~3 s, not 20
    return env


def _processes_under(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line names ``marker`` (our temp dir: only this test
    started them; ``ray start`` detaches the head, so they are not our descendants)."""
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []) and alive(proc):
            mine.append(proc)
    return mine


def _stop_processes_under(marker: str) -> list[psutil.Process]:
    """SIGTERM then SIGKILL them, each waited for; return the ones that survived (zombies are dead)."""
    leaked: list[psutil.Process] = []
    for _ in range(3):  # a head process may have started another one after the listing
        procs = _processes_under(marker)
        if not procs:
            break
        leaked = stop(procs)
    return leaked


@pytest.fixture
def token_head():
    # Short path: Ray's Unix sockets live under the temp dir (107-character limit).
    root = Path(tempfile.mkdtemp(prefix="sgtok"))
    home = root / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    token_file = root / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = _base_env(home) | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    port = _free_port()
    ports = {name: _free_port() for name in (
        "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")}
    cmd = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
           "--dashboard-host=127.0.0.1", f"--temp-dir={root / 'ray'}", "--disable-usage-stats",
           *(f"--{k}={v}" for k, v in ports.items())]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr[-2000:]
        assert _processes_under(str(root)), "ray start returned but no head process carries our temp dir"
        yield {"address": f"127.0.0.1:{port}", "token": token, "root": root}
    finally:
        leaked = _stop_processes_under(str(root))
        shutil.rmtree(root, ignore_errors=True)
    assert leaked == [], f"Ray processes survived the test: {leaked}"


def _client(address: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLIENT, address], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_token_head_refuses_clients_without_the_token_and_accepts_it(token_head):
    root, address = token_head["root"], token_head["address"]
    homes = {name: root / f"home_{name}" for name in ("none", "wrong", "right")}
    for home in homes.values():
        home.mkdir()
    (root / "wrong_token").write_text(secrets.token_hex(32))
    clients = {
        # A client that knows nothing about auth (RAY_AUTH_MODE unset, no token anywhere).
        "none": _client(address, _base_env(homes["none"])),
        # A client in token mode holding another token.
        "wrong": _client(address, _base_env(homes["wrong"]) | {
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "wrong_token")}),
        # The right token, here given as RAY_AUTH_TOKEN (the KubeRay Secret route).
        "right": _client(address, _base_env(homes["right"]) | {
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token_head["token"]}),
    }
    out = {}
    for name, proc in clients.items():
        try:
            out[name] = (proc.communicate(timeout=120)[0], proc.returncode)
        finally:
            if proc.poll() is None:
                proc.kill()

    for refused in ("none", "wrong"):
        text, code = out[refused]
        assert code != 0 and "RESULT" not in text, f"{refused}: {text[-1500:]}"
        assert "InvalidAuthToken" in text or "Unauthenticated" in text, f"{refused} failed for another reason: {text[-1500:]}"
    text, code = out["right"]
    assert code == 0 and "RESULT 42" in text, text[-2000:]
    # The token must never show up in what Ray prints.
    assert token_head["token"] not in "".join(t for t, _ in out.values())
