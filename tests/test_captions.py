"""Engine-exact captions: the rules on hand-made states, every phrasing read back to its one value,
deterministic variation, and a captured VoxelWorld dataset captioned through the CLI, each
caption naming what the state columns say.

    pytest tests/test_captions.py -q
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from worldloom.capture import Recorder
from worldloom.capture.config import EpisodeSpec
from worldloom.datasets import Dataset, commit_shards
from worldloom.datasets.captions import (
    ACTIVITY,
    BIOME,
    TIME,
    TURN,
    caption_text,
    clip_facts,
    read_caption,
    time_name,
)
from worldloom.envs import make_env
from worldloom.pipeline.cli import main as cli_main

FPS = 20.0


def columns_of(rows: list[dict]) -> dict[str, list]:
    """Column lists from per-row dicts (missing keys: null)."""
    names = ("state_x", "state_z", "state_yaw", "state_in_water", "state_held_item", "state_target_block",
             "state_biome", "state_time_of_day", "state_inventory", "action_sprint")
    return {n: [r.get(n) for r in rows] for n in names}


def row(t: int, speed: float = 0.0, yaw_rate: float = 0.0, **over) -> dict:
    """Frame t of a player moving along x at `speed` blocks/s and turning `yaw_rate` degrees/frame."""
    return {"state_x": speed * t / FPS, "state_z": 0.0, "state_yaw": (yaw_rate * t) % 360.0, "state_in_water": False,
            "state_held_item": "air", "state_target_block": None, "state_biome": "plains", "state_time_of_day": 0.25,
            "state_inventory": [], "action_sprint": False} | over


def test_facts_follow_the_state():
    inv = [{"item": "log", "count": 2}]
    rows = [row(t, speed=5.5, action_sprint=True, state_biome="snow", state_time_of_day=0.5,
                state_held_item="stone_pickaxe", state_inventory=inv) for t in range(40)]
    rows.append(row(40, state_inventory=inv + [{"item": "sapling", "count": 1}]))  # after the last action
    rows[39]["state_target_block"] = "stone"
    facts = clip_facts(columns_of(rows), 0, 40, FPS)
    assert facts == {"activity": "sprint", "biome": "snow", "time": "dusk", "held": "stone pickaxe",
                     "collected": ["sapling"], "target": "stone"}
    text = caption_text(facts, "ep/0")
    assert read_caption(text) == facts, text
    assert any(p in text for p in BIOME["snow"]) and any(p in text for p in TIME["dusk"])
    # the same speed without sprint held is a walk; standing in water is still, moving in it a swim
    walk = [row(t, speed=5.5) for t in range(40)]
    assert clip_facts(columns_of(walk), 0, 40, FPS)["activity"] == "walk"
    swim = [row(t, speed=2.0, state_in_water=True) for t in range(40)]
    assert clip_facts(columns_of(swim), 0, 40, FPS)["activity"] == "swim"
    still = [row(t, speed=0.1, yaw_rate=9.0) for t in range(40)]  # 351 degrees turned on the spot
    facts = clip_facts(columns_of(still), 0, 40, FPS)
    assert facts["activity"] == "still" and facts["turn"] == "turn_around"
    assert clip_facts(columns_of([row(t, yaw_rate=-3.0) for t in range(40)]), 0, 40, FPS)["turn"] == "look_around"
    # placing spends the inventory; a night clip; nothing known: no caption at all
    spend = [row(t, state_inventory=[{"item": "dirt", "count": 5}], state_time_of_day=0.8) for t in range(40)]
    spend.append(row(40, state_inventory=[{"item": "dirt", "count": 4}]))
    facts = clip_facts(columns_of(spend), 0, 40, FPS)
    assert facts["placed"] == ["dirt"] and facts["time"] == "night" and "collected" not in facts
    assert clip_facts(columns_of([{} for _ in range(40)]), 0, 40, FPS) == {}
    assert caption_text({}, "ep/0") == ""


def test_time_names():
    assert [time_name(f) for f in (0.0, 0.02, 0.25, 0.5, 0.75, 0.97, 1.25)] == \
        ["dawn", "dawn", "day", "dusk", "night", "dawn", "day"]


def test_every_phrasing_reads_back_to_its_one_value_and_phrasings_vary():
    combos = itertools.product(ACTIVITY, [None, *TURN], BIOME, TIME, ["air", "iron pickaxe", "log", "sapling"])
    texts = Counter()
    for k, (activity, turn, biome, time, held) in enumerate(combos):
        facts = {"activity": activity, "biome": biome, "time": time, "held": held, "target": "oak leaves",
                 "collected": ["log", "sapling"]} | ({"turn": turn} if turn else {})
        for key in (f"ep-{k}/0", f"ep-{k}/40", f"other/{k}"):
            text = caption_text(facts, key)
            assert read_caption(text) == facts, text
            assert caption_text(facts, key) == text  # deterministic
            texts[text] += 1
    # each fact's phrasings all occur
    every = " | ".join(texts)
    for table in (ACTIVITY, TURN, BIOME, TIME):
        for phrases in table.values():
            assert all(p in every for p in phrases), phrases


def small_voxel(name: str, height: int, width: int):
    return make_env(name, height=height, width=width, world_size=(32, 32, 32), day_night=True, day_length=100)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Two 100-step VoxelWorld episodes in a 5 s day (from mid-morning through the night to the next
    morning), labeled and as footage."""
    root = tmp_path_factory.mktemp("captions")
    targets = {"env": str(root / "env"), "none": str(root / "none")}
    specs = [EpisodeSpec(f"ep-{i}", i, "voxel", seed=1 + 4 * i, player="mixture", steps=100, height=64, width=64)
             for i in range(2)]
    rec = Recorder(targets, env="voxel", height=64, width=64, make_env=small_voxel)
    result = rec.record([(spec, ("env", "none")) for spec in specs])
    for label, where in targets.items():
        commit_shards(where, result["shards"][label])
    return root, targets


def test_captions_of_a_captured_dataset_name_its_state(captured, capsys):
    root, targets = captured
    out = root / "captions.jsonl"
    assert cli_main(["dataset", "captions", targets["env"], "--out", str(out), "--clip-seconds", "0.5"]) == 0
    assert "20 clip captions (10 frames each), 2 episodes" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(c["episode_id"], c["start"], c["stop"]) for c in lines] == \
        [(f"ep-{i}", s, s + 10) for i in range(2) for s in range(0, 100, 10)]
    ds = Dataset(targets["env"])
    times = set()
    for c in lines:
        facts = read_caption(c["caption"])
        assert facts == c["facts"], c
        state = ds.read_table(c["episode_id"], c["start"], c["stop"]).to_pydict()
        # what the text says is what the engine said in these rows
        assert facts["biome"] == Counter(state["state_biome"]).most_common(1)[0][0]
        assert facts["time"] == Counter(time_name(v) for v in state["state_time_of_day"]).most_common(1)[0][0]
        held = Counter(state["state_held_item"]).most_common(1)[0][0]
        assert facts["held"] == held.replace("_", " ")
        target = state["state_target_block"][-1]
        assert facts.get("target") == (target.replace("_", " ") if target else None)
        assert "activity" in facts
        times.add(facts["time"])
    assert times == {"dawn", "day", "dusk", "night"}  # clips of a tenth of a day from 0.15 to 1.15
    # the same dataset gives the same file
    again = root / "again.jsonl"
    assert cli_main(["dataset", "captions", targets["env"], "--out", str(again), "--clip-seconds", "0.5"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_footage_has_nothing_to_caption(captured, capsys):
    root, targets = captured
    out = root / "footage.jsonl"
    assert cli_main(["dataset", "captions", targets["none"], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no engine state" in err and "\n" not in err and not out.exists()
    assert cli_main(["dataset", "captions", targets["env"], "--out", str(out), "--clip-seconds", "0"]) == 2
    assert "--clip-seconds must be a positive" in capsys.readouterr().err


def test_captions_out_must_be_a_jsonl_file_and_an_empty_dataset_is_refused(captured, tmp_path, capsys):
    """`dataset captions DS --out DS/dataset.json` replaced the dataset's manifest with the captions (the dataset
    was gone); `--out DS` was an IsADirectoryError traceback, `--out new/c.jsonl` a FileNotFoundError one, and an
    empty dataset wrote an empty file, exit 0. Now one line each, nothing written; a missing folder is made."""
    from conftest import tree_digest

    from worldloom.datasets import DatasetWriter

    _, targets = captured
    env = Path(targets["env"])
    before = tree_digest(env)
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    empty = tmp_path / "empty"
    DatasetWriter(empty, 64, 64).close()
    for data, out, words in ((env, env / "dataset.json", "give a file name ending in .jsonl"),
                             (env, env, "is a folder"), (env, note, "give a file name ending in .jsonl"),
                             (env, note / "c.jsonl", f"{note} is a file"),
                             (empty, tmp_path / "e.jsonl", "the dataset holds no episodes; nothing to caption")):
        assert cli_main(["dataset", "captions", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err and "Traceback" not in err, err
    assert tree_digest(env) == before and note.read_text() == "mine" and not (tmp_path / "e.jsonl").exists()
    assert cli_main(["dataset", "captions", str(env), "--out", str(tmp_path / "new" / "c.jsonl")]) == 0
    assert (tmp_path / "new" / "c.jsonl").read_text().count("\n") == 6  # 2 episodes of 100 steps, 40-step clips


def test_export_draws_the_captions_above_the_frames(captured, capsys):
    import numpy as np
    from PIL import Image

    root, targets = captured
    gif = root / "captioned.gif"
    assert cli_main(["dataset", "export", targets["env"], "--episode", "ep-0", "--stop", "50", "--scale", "2",
                     "--captions", "--out", str(gif)]) == 0
    plain = root / "plain.gif"
    assert cli_main(["dataset", "export", targets["env"], "--episode", "ep-0", "--stop", "50", "--scale", "2",
                     "--out", str(plain)]) == 0
    with Image.open(gif) as im, Image.open(plain) as base:
        assert im.n_frames == base.n_frames == 50
        bar = im.size[1] - base.size[1]
        assert im.size[0] == base.size[0] == 128 and bar >= 20
        im.seek(0)
        top = np.asarray(im.convert("RGB"))[:bar]
        assert (top.sum(axis=-1) > 300).sum() > 50  # the caption's light text on the black bar
    capsys.readouterr()
    assert cli_main(["dataset", "export", targets["none"], "--episode", "ep-0", "--captions", "--out", str(gif)]) == 2
    assert "no engine state to caption" in capsys.readouterr().err


# ---- the caption column (format version 3) ---------------------------------------------------------

def test_capture_stores_each_rows_clip_caption(captured):
    """Every labeled row holds its 2 s clip's caption, the one the rules make from the state columns;
    footage holds none; plain Parquet readers and the clip loaders see it."""
    import pyarrow.parquet as pq

    from worldloom.datasets import ClipDataset
    from worldloom.datasets.captions import caption_episode, stored_captions

    root, targets = captured
    ds = Dataset(targets["env"])
    assert ds.version == 3 and ds.manifest["caption_column"] == "caption"
    for eid in ds.episode_ids:
        column = ds.read_table(eid, columns=["caption"]).column("caption").to_pylist()
        made = caption_episode(ds, eid)  # 40, 40 and a kept last clip of 20 steps
        assert [(c.start, c.stop) for c in made] == [(0, 40), (40, 80), (80, 100)]
        assert column == [c.text for c in made for _ in range(c.start, c.stop)] and all(column)
        assert [c.text for c in stored_captions(ds, eid)] == [c.text for c in made]
    none = Dataset(targets["none"])
    assert all(none.read_table(e, columns=["caption"]).column("caption").null_count == 100 for e in none.episode_ids)
    # no WorldLoom code: one distinct caption per clip
    table = pq.read_table([str(p) for p in (root / "env" / "frames").glob("*.parquet")], columns=["episode_id", "caption"])
    assert len({(e, c) for e, c in zip(*table.to_pydict().values(), strict=True)}) == 6
    items = ClipDataset(targets["env"], clip_len=8, stride=40)  # clips [0, 8), [40, 48), [80, 88): their last step's caption
    assert [items[i]["caption"] for i in range(len(items)) if items[i]["episode_id"] == eid] == [c.text for c in made]
    assert ClipDataset(targets["none"], clip_len=8)[0]["caption"] == ""


def test_an_older_dataset_reads_exports_and_upgrades_with_captions(captured, tmp_path, capsys):
    """A version-2 dataset (no caption column) reads and exports as before (captions made from its
    state); appending keeps version 2 (captions dropped: the state holds them); merge upgrades it
    to version 3 with the captions capture would have written."""
    import pyarrow.parquet as pq

    from worldloom.datasets import DatasetWriter, schema
    from worldloom.datasets.captions import stored_captions

    _, targets = captured
    src = Dataset(targets["env"])
    old = tmp_path / "v2"
    from conftest import start_v2_dataset

    start_v2_dataset(old)
    with DatasetWriter(old, 64, 64) as w:
        for eid in src.episode_ids:
            clip = src.frames(eid)
            state = src.read_table(eid, columns=list(schema.STATE_COLUMNS)).to_pydict()
            w.add_episode(eid, clip.frames, buttons=clip.buttons, camera=clip.camera, state=state, caption=clip.captions)
    assert pq.read_schema(next((old / "frames").glob("*.parquet"))).names == schema.FRAME_SCHEMA_V2.names
    ds = Dataset(old)
    assert ds.version == 2 and ds.frames("ep-0", 0, 4).captions is None and stored_captions(ds, "ep-0") == []
    gif = tmp_path / "old.gif"
    assert cli_main(["dataset", "export", str(old), "--episode", "ep-0", "--stop", "4", "--captions", "--out", str(gif)]) == 0
    assert cli_main(["dataset", "merge", str(old), "--out", str(tmp_path / "v3")]) == 0
    up = Dataset(tmp_path / "v3")
    assert up.version == 3
    for eid in src.episode_ids:
        assert up.read_table(eid, columns=["caption"]).column("caption").to_pylist() == \
            src.read_table(eid, columns=["caption"]).column("caption").to_pylist()


def test_capture_day_length_turns_the_sun():
    from worldloom.capture.config import CaptureConfig

    assert CaptureConfig(out="x").env_options == {}
    assert CaptureConfig(out="x", day_length=400).env_options == {"day_night": True, "day_length": 400}
    with pytest.raises(ValueError, match="day_length applies to the voxel env only"):
        CaptureConfig(out="x", env="crafter", day_length=400)
    with pytest.raises(ValueError, match="--day-length must be a whole number in 2.."):
        CaptureConfig(out="x", day_length=1)


def test_a_caption_of_partial_facts_names_only_them():
    """Recordings know some facts (VPT: motion and inventory; MineRL: held item and inventory): the
    sentence starts at what is known and reads back to exactly those facts; MineRL's empty hand is `none`."""
    for facts in ({"held": "iron pickaxe", "target": "stone"}, {"collected": ["log"]}, {"target": "stone"},
                  {"activity": "walk", "turn": "look_around", "collected": ["oak log"]}, {"biome": "desert"}):
        for key in ("a/0", "b/40", "c/80"):
            text = caption_text(facts, key)
            assert read_caption(text) == facts and not text.startswith((",", ";", " ")), text
    assert caption_text({"target": "stone"}, "a/0") in ("looking at stone", "facing stone")
    assert caption_text({"biome": "desert"}, "a/0").startswith("is ")
    rows = [{"state_held_item": "none"} for _ in range(40)]
    assert clip_facts(columns_of(rows), 0, 40, FPS) == {"held": "air"}
    assert clip_facts(columns_of([{"state_held_item": "other"} for _ in range(40)]), 0, 40, FPS) == {}
