"""worldloom.datasets: the Parquet dataset format (version 3; versions 1 and 2 still read), its writer, readers and tools.

    worldloom dataset inspect data/run1 [--json]
    worldloom dataset validate data/run1
    worldloom dataset export data/run1 --episode ep-000 --out ep.mp4 [--overlay]
    worldloom dataset merge data/a data/b --out data/ab
    worldloom dataset split data/ab --out data/splits --fractions train=0.9 val=0.1
    worldloom dataset ingest --format vpt --data recordings/ --out data/vpt     # also minerl, video

A dataset is a directory (local, or any filesystem pyarrow knows: `s3://bucket/prefix`):

```
my-dataset/
├── dataset.json                 manifest: format_version, fps, height, width, codec,
│                                action space (button names and columns, camera units,
│                                alignment), label sources, shards (path, num_rows,
│                                size_bytes, blake2b checksum, writer_id), config
├── episodes.parquet             one row per episode: episode_id, env, env_config (JSON),
│                                seed, player, num_steps, shard, row_start, label_source,
│                                label_model, split
├── frames/
│   ├── part-<writer_id>-00000.parquet   one row per step, episodes contiguous in step order,
│   ├── part-<writer_id>-00001.parquet   row groups of <= 256 frames of one episode
│   └── .part-...parquet.<hex>.tmp       a shard being written (never read; renamed when whole)
└── .dataset.lock                local filesystems: serialises commits between processes
```

Frame rows: `episode_id` (dictionary string), `step` (int32), `frame` (encoded bytes, see
`codecs`), `action_attack` ... `action_hotbar_9` (bool, one per button in `schema.BUTTONS`
order), `action_camera_pitch`, `action_camera_yaw` (float32 degrees per step), `reward`
(float32), `terminated`, `truncated` (bool), `label_source` (`env` | `idm` | `none`),
`label_model` (string, null for env), `label_confidence` (float32, null for env); version 2 adds
`action_esc`, `action_swap_hands`, `action_pick_item`, `null_action` and the `state_*` engine
state (`schema.STATE_FIELDS`), null where unknown; version 3 adds `caption`, each row's clip caption
(`captions.py`). Action columns are null where `label_source`
is `none`. `action[t]` is applied between `frame[t]` and `frame[t+1]`.

    from worldloom.datasets import DatasetWriter, Dataset, commit_shards, committed_episode_ids
    from worldloom.datasets import ClipStream, ClipDataset, to_ray_dataset   # torch / Ray
"""

from .reader import Clip, Dataset
from .schema import BUTTONS, FORMAT_VERSION, LABEL_SOURCES, NUM_BUTTONS
from .storage import FrameSpec
from .writer import DatasetWriter, ShardInfo, commit_shards, committed_episode_ids

__all__ = [
    "BUTTONS", "FORMAT_VERSION", "LABEL_SOURCES", "NUM_BUTTONS", "Clip", "ClipDataset", "ClipStream",
    "Dataset", "DatasetWriter", "FrameSpec", "ShardInfo", "commit_shards", "committed_episode_ids",
    "to_ray_dataset",
]

_LAZY = {"ClipStream": "loaders", "ClipDataset": "loaders", "to_ray_dataset": "loaders"}


def __getattr__(name: str):
    # torch and Ray load only when a loader is asked for: writers in capture actors stay light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
