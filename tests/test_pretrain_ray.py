"""The same train function on 2 Ray Train workers (gloo on CPU), through a real local Ray cluster."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from test_pretrain import write

from worldloom.pretrain.train import TrainConfig, main


@pytest.mark.ray
def test_two_ray_train_workers_take_ddp_steps(tmp_path):
    import ray

    data = write(tmp_path / "train", (0, 1), 24)
    # no Ray is up: pretrain opens its own local session (worldloom.cluster) and shuts it down after
    run = main(TrainConfig(data=(data,), out=str(tmp_path / "wm"), num_workers=2, max_steps=2, batch_size=2,
                           warmup_steps=1, checkpoint_every=1, log_every=1))
    assert not ray.is_initialized()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and state["world_size"] == 2
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    weights = load_file(run / "checkpoint" / "model.safetensors")
    assert any(float(w.abs().sum()) > 0 for k, w in weights.items() if "final" in k)  # adaLN-zero layers moved
