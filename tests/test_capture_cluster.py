"""Capture on a real two-node Ray cluster on this machine: `ray start --head` plus a second
`ray start --address=...`, each with one CPU and its own custom resource; one job uses both.

    pytest tests/test_capture_cluster.py -q
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from worldloom.capture import CaptureConfig
from worldloom.datasets import Dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_capture import assert_exactly_once, kill_tree_matching  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], marker: str) -> None:
    """`ray start ARGS`, its output in the failure message (Ray's own start-up waits can run
    out on a busy machine: one more try, after stopping what the first left, before failing)."""
    for _ in range(2):
        proc = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=180)
        if proc.returncode == 0:
            return
        kill_tree_matching(marker)
    raise AssertionError(f"ray start {' '.join(args)} failed twice:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


@pytest.fixture
def two_node_cluster(monkeypatch):
    """The address of a head node and a second node, both on this machine; torn down after."""
    ray_tmp = tempfile.mkdtemp(prefix="wlc", dir="/tmp")  # short: Ray's socket paths have a limit
    port = _free_port()
    # Ray 2.60 turns token authentication on for a head it starts; the joining node and the
    # driver must say so too, or the node is refused.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        _ray_start(["--head", f"--port={port}", f"--temp-dir={ray_tmp}", "--include-dashboard=false",
                    "--resources", json.dumps({"head_node": 1}), *common], ray_tmp)
        _ray_start([f"--address=127.0.0.1:{port}", "--resources", json.dumps({"second_node": 1}), *common],
                   "second_node")
        yield f"127.0.0.1:{port}"
    finally:
        # `ray stop` would stop every Ray on the machine; stop only this cluster's processes.
        kill_tree_matching(ray_tmp)
        kill_tree_matching(f":{port}")
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_one_job_records_on_both_nodes(tmp_path, two_node_cluster):
    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=6, steps=40, resolution=64, num_workers=2,
                        address=two_node_cluster, progress=False)
    # The driver runs in a process of its own, as a user's would: Ray reads RAY_AUTH_MODE when it
    # is imported, and this test process may have imported it before the fixture set it.
    script = textwrap.dedent(f"""
        import json, ray
        from worldloom.capture import CaptureConfig, capture
        result = capture(CaptureConfig(**{dataclasses.asdict(cfg)!r}))  # joins, records, leaves
        assert not ray.is_initialized()
        ray.init(address={two_node_cluster!r})
        nodes = {{n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}}
        ray.shutdown()
        print(json.dumps({{"node_ids": sorted(result.node_ids), "recorded": result.num_recorded, "nodes": nodes}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_AUTH_MODE": "token"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    nodes = out["nodes"]
    assert len(nodes) == 2 and {"head_node", "second_node"} <= {k for r in nodes.values() for k in r}
    assert set(out["node_ids"]) == set(nodes)  # each node's recorder wrote shards
    assert out["recorded"] == 6
    assert_exactly_once(cfg.out, cfg)
    assert Dataset(cfg.out).manifest["config"]["capture"]["address"] == two_node_cluster
    assert os.path.isdir(cfg.out)


def test_joining_a_token_cluster_without_the_token_is_one_line_at_once(tmp_path, two_node_cluster):
    """Without RAY_AUTH_MODE=token, `ray.init` logged InvalidAuthToken warnings for 21 s and then failed
    with "Failed to connect to Ray cluster" and no word of the token (a new-user trial). The two-node cluster
    above asks for the token (RAY_AUTH_MODE=token when it started); the driver here runs without it."""
    token_head = two_node_cluster
    out = tmp_path / "d"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    proc = subprocess.run([str(Path(sys.executable).with_name("worldloom")), "capture", "run", "--env", "voxel",
                           "--episodes", "1", "--steps", "8", "--resolution", "64", "--num-workers", "1",
                           "--address", token_head, "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"worldloom capture: error: --address {token_head}: the Ray cluster there requires token authentication; set "
        "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH, or the file ~/.ray/auth_token that "
        "`ray start` wrote on the head node) and run the command again"], proc.stderr[-3000:]
    assert not out.exists()  # nothing written: Ray is joined before the dataset is created
