"""Capture on a real two-node Ray cluster on this machine: `ray start --head` plus a second
`ray start --address=...`, each with one CPU and its own custom resource; one job uses both.

    pytest tests/test_capture_cluster.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from worldloom.capture import CaptureConfig, capture
from worldloom.datasets import Dataset

sys.path.insert(0, str(Path(__file__).parent))
from test_capture import assert_exactly_once, kill_tree_matching  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        subprocess.run([RAY, "start", "--head", f"--port={port}", f"--temp-dir={ray_tmp}", "--include-dashboard=false",
                        "--resources", json.dumps({"head_node": 1}), *common],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--resources", json.dumps({"second_node": 1}),
                        *common], check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        # `ray stop` would stop every Ray on the machine; stop only this cluster's processes.
        kill_tree_matching(ray_tmp)
        kill_tree_matching(f":{port}")
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_one_job_records_on_both_nodes(tmp_path, two_node_cluster):
    import ray

    cfg = CaptureConfig(out=str(tmp_path / "d"), episodes=6, steps=40, resolution=64, num_workers=2,
                        address=two_node_cluster, progress=False)
    try:
        result = capture(cfg)  # joins the cluster with ray.init(address=...), leaves it after
        assert not ray.is_initialized()
        ray.init(address=two_node_cluster)
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
    assert len(nodes) == 2 and {"head_node", "second_node"} <= {k for r in nodes.values() for k in r}
    assert result.node_ids == set(nodes)  # each node's recorder wrote shards
    assert result.num_recorded == 6
    assert_exactly_once(cfg.out, cfg)
    assert Dataset(cfg.out).manifest["config"]["capture"]["address"] == two_node_cluster
    assert os.path.isdir(cfg.out)
