"""worldloom.capture: Ray actors that play envs and record episodes into datasets, exactly once.

    worldloom capture --env voxel --player mixture --episodes 8 --steps 200 --resolution 128 \\
        --num-workers 2 --out data/run1 [--seed 0] [--address HOST:PORT] [--strip-actions data/truth]

    from worldloom.capture import CaptureConfig, run
    path = run(CaptureConfig(out="data/run1", env="voxel", episodes=8, steps=200))

Modules: `config` (CaptureConfig, EpisodeSpec, expand_specs), `recorder` (Recorder: plays and
writes shards; a thin ray.remote wraps it), `driver` (run: plan, fan out, commit, progress),
`cli` (the `worldloom capture` subcommand). See docs/capture.md.
"""

from .config import CaptureConfig, EpisodeSpec, expand_specs
from .driver import CaptureFailed, CaptureResult, capture, run
from .recorder import Recorder, play_episode

__all__ = ["CaptureConfig", "CaptureFailed", "CaptureResult", "EpisodeSpec", "Recorder", "capture", "expand_specs",
           "play_episode", "run"]
