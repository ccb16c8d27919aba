"""The same train function on 2 Ray Train workers (gloo on CPU), through a real local Ray cluster
started by `ray_session`; every socket of the session is on loopback but torch's rendezvous store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ListeningSockets
from safetensors.torch import load_file
from test_pretrain import write

from worldloom.pretrain.train import TrainConfig, main

# The one listener of a local session that is not on loopback, and why (docs/capture.md): the
# rendezvous store of torch.distributed (c10d TCPStore) that Ray Train's rank-0 worker starts for
# gloo/NCCL binds to all interfaces ("::"); torch offers no bind address for it (only a socket bound
# beforehand, `master_listen_fd`, which Ray Train's process-group setup does not pass). It lives
# while `pretrain --workers N` trains; gloo's own connections bind to the node IP, 127.0.0.1.
KNOWN_EXCEPTION = "ray::RayTrainWorker"
SETTLE_S = 6.0


@pytest.mark.ray
def test_two_ray_train_workers_take_ddp_steps(tmp_path):
    import ray

    data = write(tmp_path / "train", (0, 1), 24)
    # no Ray is up: pretrain opens its own local session (worldloom.cluster) and shuts it down after
    with ListeningSockets() as sockets:
        run = main(TrainConfig(data=(data,), out=str(tmp_path / "wm"), num_workers=2, max_steps=2, batch_size=2,
                               warmup_steps=1, checkpoint_every=1, log_every=1))
    assert not ray.is_initialized()
    outside = sockets.outside_loopback()
    # a worker's title follows the task it runs (ray::execute._setup_torch_process_group, ...): the
    # socket is the exception when its process was a RayTrainWorker
    assert all(ip in ("::", "0.0.0.0") and any(t.startswith(KNOWN_EXCEPTION) for t in titles)
               for (ip, _, _), titles in outside.items()), "listening beyond loopback:\n" + sockets.table()
    assert any(t.startswith("raylet") for ts in sockets.seen.values() for t in ts), sockets.table()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["world_size"] == 2
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    weights = load_file(run / "checkpoint" / "model.safetensors")
    assert any(float(w.abs().sum()) > 0 for k, w in weights.items() if "final" in k)  # adaLN-zero layers moved


WORLDLOOM = str(Path(sys.executable).with_name("worldloom"))


@pytest.mark.ray
def test_ctrl_c_on_a_ray_train_run_is_the_one_interrupted_line(tmp_path):
    """Ctrl-C on `pretrain train --num-workers 2` (the CLI in a process of its own, as a terminal runs it):
    Ray Train's own SIGINT handler ended it with exit code 1 and no word (a new-user trial); now it is
    SIGTERM's line with Ctrl-C's exit code 130, and the periodic checkpoint is there to resume from. What
    the run printed on its way has none of the lines of Ray Train's own helpers that flooded the terminal."""
    data = write(tmp_path / "train", (0, 1), 24)
    out = tmp_path / "wm"
    proc = subprocess.Popen([WORLDLOOM, "pretrain", "train", "--data", data, "--out", str(out), "--num-workers", "2",
                             "--max-steps", "100000", "--batch-size", "2", "--threads", "1", "--checkpoint-every", "2",
                             "--camera-fov-deg", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 150
        while not (out / "checkpoint" / "state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(SETTLE_S)  # training goes on a while, as in the trial: Ray Train's helpers have had their say
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = output.strip().splitlines()[-1]
    assert proc.returncode == 130, output[-3000:]
    assert last == "worldloom pretrain: interrupted; re-run the same command to resume", output[-3000:]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] >= 2
    # Ray Train v2's placement-group cleaner asks the state API (which a session without the dashboard does
    # not serve) every second or so whether the run lives, and each failure was a line: ~30 in a 45 s run.
    assert "Failed to query Ray Train Controller" not in output, output[-3000:]
    assert "(RayTrainWorker pid=" in output and "pretrain:" in output  # the workers' progress still shows


@pytest.mark.ray
def test_one_worker_per_gpu_without_a_gpu_is_refused_before_anything_is_written_or_falls_back_in_the_pipeline(
        tmp_path, monkeypatch, capsys):
    """`pretrain train --device cuda --num-workers 0` where there is no GPU said "training on the CPU instead",
    then refused, and left config.json; `pipeline run --device cuda --address` on a cluster without GPUs
    ran capture, IDM and labeling first and then refused with a hint that did not reach Ray Train."""
    import ray

    from worldloom.cluster import ray_session
    from worldloom.errors import UserError
    from worldloom.pipeline import job

    data = write(tmp_path / "train", (0, 1), 24)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    out = tmp_path / "wm"
    with pytest.raises(UserError, match=r"^--num-workers 0 asks for one Ray Train worker per GPU, but torch sees none "
                                        r"on this machine; give --num-workers N"):
        main(TrainConfig(data=(data,), out=str(out), device="cuda", num_workers=0, max_steps=1, batch_size=2))
    assert not out.exists() and "instead" not in capsys.readouterr().err
    with ray_session(None, 1):  # a real local cluster, which has no GPU: the one --address would join
        address = ray.get_runtime_context().gcs_address
        with pytest.raises(UserError, match="but the Ray cluster has none; give --num-workers N"):
            main(TrainConfig(data=(data,), out=str(out), device="cuda", num_workers=0, max_steps=1, batch_size=2,
                             address=address))
        assert not out.exists()
        seen = {}

        def first_stage(cfg, configs):
            seen["workers"] = configs["pretrain"].num_workers
            raise UserError("stop here")

        monkeypatch.setattr(job, "run_capture", first_stage)
        with pytest.raises(UserError, match="stop here"):
            job.main(job.PipelineConfig(out=str(tmp_path / "p"), preset="micro", address=address, device="cuda"))
    assert seen["workers"] == 1  # trained in this process, as without --address
    err = capsys.readouterr().err
    assert f"the Ray cluster at --address {address} has no GPU: it trains in this process instead" in err, err


@pytest.mark.ray
def test_a_cluster_joined_decides_its_workers_gpus_not_the_driver(tmp_path, monkeypatch, capsys):
    """A laptop without a GPU driving `pretrain train --device cuda --address` at a GPU cluster trained Ray Train's
    workers on their CPUs with gloo: use_gpu came from the driver's torch. Now from the cluster's resources. No GPU
    can run here: the cluster is a real local Ray cluster whose 2 GPUs are declared resources (mocked, so said)."""
    import ray

    from worldloom.pretrain.train import cluster_gpu

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the driver's torch sees none (as here anyway)
    ray.init(num_cpus=1, num_gpus=2, _node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert cluster_gpu(TrainConfig(data=("d",), out="o", device="cuda", num_workers=0, address=address))
        assert cluster_gpu(TrainConfig(data=("d",), out="o", device="cuda:0", num_workers=2))  # the local cluster's
        assert not cluster_gpu(TrainConfig(data=("d",), out="o", device="cpu", num_workers=2, address=address))
    finally:
        ray.shutdown()
    assert "asked for GPUs" not in capsys.readouterr().err
    ray.init(num_cpus=1, num_gpus=0, _node_ip_address="127.0.0.1", include_dashboard=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert not cluster_gpu(TrainConfig(data=("d",), out="o", device="cuda", num_workers=2, address=address))
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert f"--device cuda asked for GPUs but the Ray cluster at --address {address} has none" in err, err
