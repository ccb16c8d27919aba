"""`worldloom dataset ingest`: VPT recordings against VPT's own code (golden), MineRL v0 trajectories,
plain video, resuming by content, bad inputs, and the datasets training an IDM."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from recordings import frame_number, frames_of, vpt_line, write_minerl, write_vpt
from videos import (
    frame_index,
    truncate,
    write_audio_only,
    write_audio_with_cover,
    write_video,
    write_with_cover,
)

from worldloom.actions import BUTTONS
from worldloom.datasets import Dataset, schema, vpt
from worldloom.datasets.ingest import IngestConfig, ingest
from worldloom.datasets.manifest import action_space
from worldloom.datasets.validate import validate
from worldloom.datasets.video import VideoReader
from worldloom.errors import UserError
from worldloom.pipeline.cli import main

GOLDEN = Path(__file__).parent / "fixtures" / "vpt"


def run(data, out, **kwargs) -> dict:
    return ingest(IngestConfig(data=tuple(str(d) for d in data), out=str(out), **kwargs))


# ---- the VPT conversion against VPT's own code ------------------------------------------------

def expected_step(entry: dict) -> tuple[dict, np.ndarray, bool]:
    """(buttons and extra buttons by name, camera, null) WorldLoom must give on a golden line: VPT's
    worker output (zero for a step VPT drops), then the documented divergences."""
    action = entry["vpt_worker_action"] or {name: 0 for name in [*BUTTONS, *schema.EXTRA_BUTTONS]} | {"camera": [0, 0]}
    pressed = {name: bool(action[name]) for name in [*BUTTONS, *schema.EXTRA_BUTTONS]}
    camera, null = np.asarray(action["camera"], np.float32), not entry["vpt_worker_keeps"]
    for d in entry["divergences"]:
        if d["field"] == "camera":
            camera = np.asarray(d["worldloom"], np.float32)
        elif d["field"] == "null_action":
            null = d["worldloom"]
        else:
            pressed[d["field"]] = bool(d["worldloom"])
    return pressed, camera, null


def test_vpt_conversion_matches_vpts_own_code_line_by_line():
    golden = json.loads((GOLDEN / "golden.json").read_text())
    lines = vpt.read_jsonl(GOLDEN / golden["jsonl"])
    steps = vpt.convert(lines, vpt.recorder_version(GOLDEN / golden["jsonl"]))
    assert vpt.recorder_version(GOLDEN / golden["jsonl"]) == golden["recorder_version"] == "6.8"
    assert vpt.gui_scaler("6.8") == golden["gui_scaler"]
    num_divergent = 0
    for entry in golden["lines"]:
        t = entry["line"]
        pressed, camera, null = expected_step(entry)
        ours = {**{b: bool(steps.buttons[t, i]) for i, b in enumerate(BUTTONS)},
                **{b: bool(steps.extra_buttons[t, i]) for i, b in enumerate(schema.EXTRA_BUTTONS)}}
        assert ours == pressed, (t, {k for k in ours if ours[k] != pressed[k]})
        np.testing.assert_array_equal(steps.camera[t], camera, err_msg=f"line {t}")
        assert bool(steps.null_action[t]) == null, t
        num_divergent += bool(entry["divergences"])
    # The divergences the fixture pins (docs/ingest.md): whole-degree truncation (0.6 -> 0), the GUI
    # scaler, a 225-degree glitch zeroed, no hotbar press at step 0, scroll-only steps kept.
    assert num_divergent == 10
    fields = {d["field"] for e in golden["lines"] for d in e["divergences"]}
    assert fields == {"camera", "hotbar.2", "hotbar.3", "hotbar.1", "null_action"}
    assert steps.counts["stuck_attack_steps"] == 2 and steps.counts["unknown_keys"] == {"key.keyboard.f3": 1, "key.keyboard.t": 1}


def test_vpt_cursor_frames_match_vpts_own_code_bit_for_bit():
    golden = json.loads((GOLDEN / "golden.json").read_text())
    steps = vpt.convert(vpt.read_jsonl(GOLDEN / golden["jsonl"]), "6.8")
    with VideoReader(GOLDEN / golden["mp4"], timing="frames") as reader:
        frames = np.stack(list(reader.steps()))
    plain = frames.copy()
    assert vpt.draw_cursors(frames, steps, 0) == int(steps.gui_open.sum()) == 4
    with np.load(GOLDEN / "golden_frames.npz") as vpt_out:
        kept, vpt_frames = vpt_out["steps"].tolist(), vpt_out["frames"]
    assert kept == golden["worker_kept_steps"]
    for t, theirs in zip(kept, vpt_frames, strict=True):
        np.testing.assert_array_equal(frames[t], theirs, err_msg=f"step {t}")
    drawn = [t for t in range(len(frames)) if (frames[t] != plain[t]).any()]
    assert drawn == [3, 4, 12, 13]  # GUI open; 12: clipped by the corner; 13: at the origin
    # VPT's helper before commit fb373d3 clipped with `min` where `max` was needed and drew nothing.
    assert golden["cursor_helper_before_fb373d3_draws"] is False


def test_cursor_is_clipped_on_every_side():
    frame = np.zeros((36, 64, 3), np.uint8)
    vpt.draw_cursor(frame, -5, -3)  # VPT's helper fails on a negative position; ours draws the visible part
    rgb, alpha = vpt.cursor_image()
    expected = (rgb[3:, 5:] * alpha[3:, 5:]).astype(np.uint8)
    np.testing.assert_array_equal(frame[:13, :11], expected)
    vpt.draw_cursor(frame, 70, 40)  # entirely outside: nothing


# ---- resizing: INTER_AREA by our kernel, against OpenCV on decoded frames ----------------------

def recording_640x360(folder: Path, num_frames: int, gui_at: int) -> Path:
    """`folder/rec.mp4`: 640x360 H.264 yuv420p (as VPT's recordings are) of a moving blurred texture, and
    its jsonl, the GUI open at step `gui_at` with the cursor mid-frame."""
    import cv2

    from worldloom.io import write_video

    rng = np.random.default_rng(7)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (360, 640 + 8 * num_frames, 3), dtype=np.uint8), (5, 5), 0)
    frames = np.stack([tex[:, 8 * i:8 * i + 640] for i in range(num_frames)])
    video = write_video(folder / "rec.mp4", frames, fps=20, crf=23)
    lines = [vpt_line(t, gui=t == gui_at, x=600.0, y=300.0) for t in range(num_frames)]
    (folder / "rec.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return video


def test_area_resize_equals_opencv_inter_area_within_one_level(tmp_path):
    import cv2

    from worldloom.datasets.resize import area_resize, area_taps, resize

    starts, weights = area_taps(360, 128)  # 2.8125 source rows per output row, the weights cv2 uses
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(weights[1, :4] * 2.8125, [0.1875, 1, 1, 0.625], atol=1e-6)
    assert starts[:3].tolist() == [0, 2, 5] and area_taps(640, 128)[1].shape == (128, 5)
    (tmp_path / "in").mkdir()
    with VideoReader(recording_640x360(tmp_path / "in", 3, gui_at=-1), timing="frames") as reader:
        frames = np.stack(list(reader.steps()))  # (3, 360, 640, 3): real decoded frames
    differ = total = 0
    for frame in frames:
        for height, width in [(128, 128), (64, 64), (144, 256), (359, 639), (37, 23), (72, 128), (180, 320)]:
            ours, cv = resize(frame, (height, width)), cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            assert ours.shape == (height, width, 3) and ours.dtype == np.uint8
            gap = np.abs(ours.astype(int) - cv)
            assert gap.max() <= 1, (height, width)
            differ, total = differ + int((gap > 0).sum()), total + gap.size
        # 640x360 -> 128x128, the benchmark's case: the kernel itself (not cv2's whole-number path)
        np.testing.assert_array_equal(area_resize(frame, (128, 128)),
                                      cv2.resize(frame, (128, 128), interpolation=cv2.INTER_AREA))
    # only values within float rounding of a half round the other way: 99 of 3.2 M here (80 at 639x359, 19 at 64x64)
    assert differ / total < 1e-4, differ
    grown = resize(frames[0, :36, :64], (72, 128))
    np.testing.assert_array_equal(grown, cv2.resize(frames[0, :36, :64], (128, 72), interpolation=cv2.INTER_LINEAR))
    with pytest.raises(ValueError, match="shrinking needs"):
        area_taps(10, 20)


def test_ingest_resizes_after_drawing_the_cursor(tmp_path, capsys):
    import cv2

    (tmp_path / "in" / "6.8").mkdir(parents=True)
    video = recording_640x360(tmp_path / "in" / "6.8", 4, gui_at=2)
    assert run([tmp_path / "in"], tmp_path / "ds", resolution="128")["num_steps"] == 4
    assert "dataset ingest: frames 640x360 -> 128x128 (aspect 1.78 -> 1) (--resolution)\n" in capsys.readouterr().err
    stored = Dataset(tmp_path / "ds").frames("6.8/rec").frames
    with VideoReader(video, timing="frames") as reader:
        decoded = np.stack(list(reader.steps()))
    plain = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in decoded])
    steps = vpt.convert(vpt.read_jsonl(video.with_suffix(".jsonl")), "6.8")
    assert vpt.draw_cursors(decoded, steps, 0) == 1  # at the source size, as VPT draws it
    drawn = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in decoded])
    assert np.abs(stored.astype(int) - drawn).max() <= 1
    assert [t for t in range(4) if np.abs(stored[t].astype(int) - plain[t]).max() > 1] == [2]


# ---- ingesting folders -----------------------------------------------------------------------

@pytest.fixture
def vpt_folder(tmp_path):
    root = tmp_path / "vpt"
    write_vpt(root / "6.8", "alpha-000000000001-20220101-000000", 40, size=64, seed=1)
    write_vpt(root / "10.0", "beta-000000000002-20220101-000000", 36, num_lines=37, size=64, seed=2)
    return root


def test_vpt_folder_ingests_with_state_resumes_and_replaces(vpt_folder, tmp_path):
    out = tmp_path / "ds"
    summary = run([vpt_folder], out, resolution="32")
    assert sorted(summary["ingested"]) == ["10.0/beta-000000000002-20220101-000000", "6.8/alpha-000000000001-20220101-000000"]
    assert not summary["failed"] and summary["num_steps"] == 40 + 36
    assert any("37 lines: kept the first 36 steps" in w for w in summary["warnings"]), summary["warnings"]
    assert validate(out) == []
    ds = Dataset(out)
    assert ds.version == schema.FORMAT_VERSION and (ds.spec.height, ds.spec.width, ds.spec.fps) == (32, 32, 20)
    alpha = "6.8/alpha-000000000001-20220101-000000"
    clip = ds.frames(alpha)
    assert clip.label_source == "env" and clip.buttons.shape == (40, 20)
    table = ds.read_table(alpha, columns=["state_x", "state_yaw", "state_tick", "state_gui_open", "state_hotbar_slot",
                                          "state_inventory", "null_action", "action_esc"])
    assert table.column("state_tick").to_pylist() == list(range(40))
    assert table.column("state_yaw").to_pylist()[3] == 13.0 and table.column("state_x").to_pylist()[0] == 100.5
    assert table.column("state_gui_open").to_pylist()[20:24] == [True] * 4
    assert table.column("state_inventory").to_pylist()[0] == [{"item": "oak_log", "count": 2}]
    assert table.column("action_esc").null_count == 0 and table.column("null_action").null_count == 0
    env_config = json.loads(ds.episodes.to_pylist()[ds.episode_ids.index(alpha)]["env_config"])
    assert env_config["recorder_version"] == "6.8" and env_config["gui_mouse_scaler"] == 2.0
    assert env_config["resize"] == {"from": [64, 64], "to": [32, 32], "interpolation": "INTER_AREA"}
    assert env_config["source_identity"]["file_checksums"] and env_config["cursor_frames"] == 4
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["config"]["resize"]["down"] == "INTER_AREA"
    from worldloom.datasets.summary import summarize

    assert summarize(out)["state_rows"]["state_tick"] == 76 and "state_biome" not in summarize(out)["state_rows"]
    # Again: nothing to do. A changed jsonl: that recording again, replacing its episode.
    assert run([vpt_folder], out, resolution="32")["skipped_done"] == 2
    jsonl = vpt_folder / "6.8" / "alpha-000000000001-20220101-000000.jsonl"
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    lines[5]["keyboard"]["keys"] = ["key.keyboard.q"]
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    again = run([vpt_folder], out, resolution="32")
    assert again["ingested"] == [alpha] and again["replaced"][0]["episodes"] == [alpha] and again["skipped_done"] == 1
    assert Dataset(out).frames(alpha).buttons[5, BUTTONS.index("drop")] and validate(out) == []


def test_vpt_frames_at_source_size_carry_the_cursor(tmp_path):
    lines = [vpt_line(t, gui=t == 2, x=640.0, y=360.0) for t in range(4)]
    _, jsonl = write_vpt(tmp_path / "in", "rec", 4, size=64, lines=lines)
    (tmp_path / "actions").mkdir()
    jsonl.rename(tmp_path / "actions" / "rec-actions.jsonl")  # a pair with two names, given in a list
    (tmp_path / "pairs.txt").write_text("in/rec.mp4 actions/rec-actions.jsonl\n")
    assert run([tmp_path / "pairs.txt"], tmp_path / "ds")["ingested"] == ["rec"]
    stored = Dataset(tmp_path / "ds").frames("rec").frames
    with VideoReader(tmp_path / "in" / "rec.mp4", timing="frames") as reader:
        decoded = np.stack(list(reader.steps()))
    assert frame_number(stored) == [0, 1, 2, 3]
    changed = [t for t in range(4) if (stored[t] != decoded[t]).any()]
    assert changed == [2]  # cursor at int((640, 360) * 64 / 720) = (56, 32): only its top-left 8x16 fits
    diff = np.argwhere((stored[2] != decoded[2]).any(-1))
    assert diff.min(0).tolist() >= [32, 56] and diff.max(0).tolist() <= [47, 63]


def test_bad_inputs_are_skipped_with_one_line_each_and_the_rest_kept(tmp_path, capsys):
    root = tmp_path / "in"
    write_vpt(root, "good", 12, seed=3)
    video, jsonl = write_vpt(root, "malformed", 12, seed=4)
    text = jsonl.read_text().splitlines()
    text[6] = text[6][:40]
    jsonl.write_text("\n".join(text) + "\n")
    write_vpt(root, "no-video", 12, seed=5)[0].unlink()
    write_vpt(root, "no-jsonl", 12, seed=6)[1].unlink()
    audio = write_audio_only(root / "audio.mp4")
    (root / "audio.jsonl").write_text(json.dumps(vpt_line(0)) + "\n")
    whole = write_video(tmp_path / "whole.mp4", num_frames=40, container_options={"movflags": "faststart"})
    truncate(whole, root / "cut.mp4")  # a broken download: the index promises 40 frames, fewer decode
    (root / "cut.jsonl").write_text("".join(json.dumps(vpt_line(t)) + "\n" for t in range(40)))
    lines = [vpt_line(t, keys=["f3", "w"] if t == 1 else ()) for t in range(12)]
    write_vpt(root, "unknown-keys", 12, lines=lines)
    code = main(["dataset", "ingest", "--data", str(root), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    skipped = [line for line in err.splitlines() if "skipped:" in line]
    assert len(skipped) == 5, "\n".join(skipped)
    assert any("malformed.jsonl line 7: not valid JSON" in line for line in skipped), skipped
    assert any("no-jsonl.mp4: no no-jsonl.jsonl beside it" in line for line in skipped), skipped
    assert any("no-video.jsonl: no no-video.mp4 beside it" in line for line in skipped), skipped
    assert any(f"{audio}: no video stream" in line for line in skipped), skipped
    assert any("cut.mp4: truncated: decoded" in line for line in skipped), skipped
    assert any("unknown-keys.jsonl: ignored keys VPT does not map: key.keyboard.f3 x1" in line for line in err.splitlines())
    ds = Dataset(tmp_path / "ds")
    assert sorted(ds.episode_ids) == ["good", "unknown-keys"] and validate(tmp_path / "ds") == []
    assert ds.frames("unknown-keys").buttons[1, BUTTONS.index("forward")]
    # another size without --resolution: skipped, saying what to pass
    write_vpt(tmp_path / "big", "big", 8, size=96)
    with pytest.raises(UserError, match="big.mp4: .*stores 64x64 frames .*these are 96x96 .*pass --resolution 64x64"):
        run([tmp_path / "big"], tmp_path / "ds")  # the only input failed: one line, nothing ingested
    # --keep-truncated keeps what decodes of the cut one, with the mismatch reported
    kept = run([root / "cut.mp4"], tmp_path / "ds", keep_truncated=True)
    assert kept["ingested"] == ["cut"] and any("40 lines: kept the first" in w for w in kept["warnings"]), kept



def test_a_video_kept_truncated_is_not_done_for_a_rerun_without_the_flag(tmp_path, capsys):
    """`dataset ingest --keep-truncated` of a cut download, then the same command without the flag: "already
    there", though a run without the flag skips it as truncated. Now it is read again (skipped as truncated, its
    kept episodes left), said in one line; with the flag it is done."""
    root = tmp_path / "in"
    root.mkdir()
    whole = write_video(tmp_path / "whole.mp4", num_frames=40, container_options={"movflags": "faststart"})
    truncate(whole, root / "cut.mp4")
    kept = run([root], tmp_path / "ds", format="video", keep_truncated=True)
    assert kept["ingested"] == ["cut.mp4"]
    frames = Dataset(tmp_path / "ds").num_frames
    capsys.readouterr()
    with pytest.raises(UserError, match="cut.mp4: truncated: decoded"):
        run([root], tmp_path / "ds", format="video")
    assert (f"dataset ingest: 1 input(s) in {tmp_path / 'ds'} were kept truncated by a run with --keep-truncated (e.g. "
            f"{root / 'cut.mp4'}): not done without the flag") in capsys.readouterr().err
    assert Dataset(tmp_path / "ds").num_frames == frames and validate(tmp_path / "ds") == []
    assert run([root], tmp_path / "ds", format="video", keep_truncated=True)["skipped_done"] == 1


def test_a_recording_with_frames_missing_says_where_its_pairing_slips(tmp_path):
    """A VPT mp4 whose recorder dropped the frame at 0.50 s (the pts go 0.45 -> 0.55 s) beside its 40 jsonl lines,
    and a MineRL recording with the same gap: each decoded frame is one step, so every action from there on pairs
    with the frame after its own. Until 2026-12-07 the only line was "the video has 39 frames and the jsonl 40
    lines: kept the first 39 steps", as if the last line were the one without a frame (and a VPT or MineRL video's
    decode warnings were never said). Now the gap is said with its time, and counted in env_config's decode."""
    vpt_dir = tmp_path / "vpt" / "10.0"
    write_vpt(vpt_dir, "gap", 40)
    write_video(vpt_dir / "gap.mp4", pts_ms=[50 * i for i in range(40) if i != 10])  # frame 10 dropped
    write_vpt(vpt_dir, "whole", 40)
    summary = run([tmp_path / "vpt"], tmp_path / "ds")
    gap = [w for w in summary["warnings"] if "skip time" in w]
    assert len(gap) == 1 and gap[0].startswith(f"{vpt_dir / 'gap.mp4'}: its frames skip time 1 time(s), first after "
                                               "the frame at 0.45 s: about 1 frame(s) of the recording are not in the file")
    ds = Dataset(tmp_path / "ds")
    decode = {row["episode_id"]: json.loads(row["env_config"])["decode"] for row in ds.episodes.to_pylist()}
    assert (decode["10.0/gap"]["num_gaps"], decode["10.0/gap"]["missing_frames"]) == (1, 1)
    assert (decode["10.0/whole"]["num_gaps"], decode["10.0/whole"]["missing_frames"]) == (0, 0)

    folder = write_minerl(tmp_path / "minerl" / "MineRLTreechop-v0" / "t-gap", 10, lead_frames=0)
    write_video(folder / "recording.mp4", pts_ms=[50 * i for i in range(13) if i != 6])  # 11 frames, 6 dropped
    summary = run([tmp_path / "minerl"], tmp_path / "ds-minerl", format="minerl")
    assert any("t-gap: its frames skip time 1 time(s), first after the frame at 0.25 s" in w
               for w in summary["warnings"]), summary["warnings"]


def test_plain_videos_ingest_the_video_not_its_cover_art(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    write_with_cover(root / "clip.mkv", "mkv still first", num_frames=12)  # a one-frame 32x32 track first
    write_audio_with_cover(root / "song.m4a")
    summary = run([root, root / "song.m4a"], tmp_path / "ds", format="video")  # .m4a: not a video by its suffix
    assert summary["ingested"] == ["clip.mkv"], summary
    assert [f["error"] for f in summary["failed"]][0].startswith(f"{root / 'song.m4a'}: no video stream (only an attached")
    ds = Dataset(tmp_path / "ds")
    assert (ds.spec.height, ds.spec.width) == (64, 64) and frame_index(ds.frames("clip.mkv").frames) == list(range(12))

# ---- MineRL v0 ---------------------------------------------------------------------------------

def test_minerl_trajectory_aligns_actions_with_states(tmp_path):
    env = tmp_path / "MineRLTreechop-v0"
    write_minerl(env / "v3_absolute_grape_changeling-6_37339-46767", 30, lead_frames=3, seed=1)
    write_minerl(env / "v3_other-1", 20, lead_frames=0, seed=2, metadata=False)
    summary = run([tmp_path], tmp_path / "ds", format="minerl")
    assert not summary["failed"] and summary["num_steps"] == 50, summary
    assert any("'craft'" in w for w in summary["warnings"])
    assert validate(tmp_path / "ds") == []
    ds = Dataset(tmp_path / "ds")
    name = "MineRLTreechop-v0/v3_absolute_grape_changeling-6_37339-46767"
    clip = ds.frames(name)
    assert frame_number(clip.frames) == list(range(3, 33))  # frames 3.. are the states; the last state has no action
    npz = np.load(env / "v3_absolute_grape_changeling-6_37339-46767" / "rendered.npz")
    np.testing.assert_array_equal(clip.buttons[:, BUTTONS.index("forward")], npz["action$forward"] > 0)
    np.testing.assert_array_equal(clip.buttons[:, BUTTONS.index("use")], npz["action$place"] != "none")
    np.testing.assert_allclose(clip.camera, npz["action$camera"])
    np.testing.assert_array_equal(clip.rewards, npz["reward"])
    assert clip.terminated[-1] and not clip.terminated[:-1].any()
    table = ds.read_table(name, columns=["state_inventory", "state_held_item"])
    assert table.column("state_inventory").to_pylist()[7] == [{"item": "dirt", "count": 3}, {"item": "log", "count": 1}]
    assert table.column("state_held_item").to_pylist()[0] == "none"
    env_config = json.loads(ds.episodes.to_pylist()[ds.episode_ids.index(name)]["env_config"])
    assert env_config["first_frame"] == 3 and env_config["conversion"]["unmapped_action_steps"] == {"craft": 1}
    assert env_config["conversion"]["unmapped_keys"] == ["observation$compassAngle"]
    assert ds.episodes.to_pylist()[0]["env"] == "minerl:MineRLTreechop-v0"


def test_minerl_missing_key_and_short_video_are_reported(tmp_path):
    env = tmp_path / "MineRLNavigate-v0"
    write_minerl(env / "t-missing", 10, drop=("action$forward",))
    folder = write_minerl(env / "t-short", 10, lead_frames=0)
    (folder / "metadata.json").write_text(json.dumps({"true_video_frame_count": 15}))  # says 15, decodes 11
    write_minerl(env / "t-good", 10)
    summary = run([env], tmp_path / "ds", format="minerl")
    assert [f["error"] for f in summary["failed"]] == [
        f"{env / 't-missing' / 'rendered.npz'}: has no 'action$forward'; every MineRL v0 trajectory records the "
        "reward, the camera and the 8 movement keys (forward, back, left, right, jump, sneak, sprint, attack)"]
    assert any("t-short: metadata.json says 15 video frames, recording.mp4 lists 11: aligned by the video's" in w
               for w in summary["warnings"]), summary
    assert frame_number(Dataset(tmp_path / "ds").frames("t-short").frames) == list(range(10))


def test_minerl_video_whose_edit_list_hides_frames_aligns_by_the_frames_it_shows(tmp_path):
    """A MineRL recording.mp4 whose edit list hides its first 2 frames (what `ffmpeg -ss ... -c copy` leaves: 16
    frames in the sample table, 14 shown), 3 of them the world loading, then the 11 states of 10 actions, and
    metadata.json saying 14. The states are the last 11 frames shown. Until 2026-12-07 the hidden frames were
    counted, so state 0 was taken 2 frames late (every action paired with the frame 100 ms after its own), one
    step was lost, and the warning blamed metadata.json ("says 14 video frames, recording.mp4 lists 16")."""
    folder = write_minerl(tmp_path / "MineRLTreechop-v0" / "t-cut", 10, lead_frames=3)
    write_video(folder / "recording.mp4", pts_ms=[50 * i - 100 for i in range(16)])  # painted 0, 1 hidden
    (folder / "metadata.json").write_text(json.dumps({"true_video_frame_count": 14}))
    summary = run([tmp_path / "MineRLTreechop-v0"], tmp_path / "ds", format="minerl")
    assert not [w for w in summary["warnings"] if "video frames" in w or "decodes" in w], summary["warnings"]
    assert frame_index(Dataset(tmp_path / "ds").frames("t-cut").frames) == list(range(5, 15))


def test_minerl_values_that_cannot_be_right_are_refused_naming_the_key_and_step(tmp_path):
    """A new-user trial's trajectories (session 58): NaN and infinite camera values and a NaN reward were stored as
    0, 180 degrees and 0 without a word; a movement key of -1 read as released and 0.5 as pressed; a key stored as
    text, empty arrays, an empty file and a file that is no zip ended in raw exceptions (or numpy's advice to
    unpickle). Each is now skipped in one line naming the file, the key and the step; the good one is ingested.
    A metadata.json that miscounts the video's frames no longer sets every action off by the difference."""
    env = tmp_path / "MineRLTreechop-v0"

    def edit(name: str, change) -> Path:
        folder = write_minerl(env / name, 12, lead_frames=3)
        if change is not None:
            arrays = dict(np.load(folder / "rendered.npz"))
            change(arrays)
            np.savez(folder / "rendered.npz", **arrays)
        return folder / "rendered.npz"

    def at(key, step, value):
        def change(arrays):
            arrays[key] = arrays[key].astype(np.float64 if isinstance(value, float) else arrays[key].dtype)
            arrays[key][step] = value
        return change

    expected = {
        edit("nan-camera", at("action$camera", 4, np.nan)): "'action$camera' is not finite at step 4 (1 step(s)); degrees",
        edit("inf-camera", at("action$camera", 5, np.inf)): "'action$camera' is not finite at step 5",
        edit("nan-reward", at("reward", 3, np.nan)): "'reward' is not finite at step 3",
        edit("minus-one", at("action$forward", 3, -1)): "'action$forward' is -1 at step 3 (1 step(s) not 0 or 1)",
        edit("half", at("action$jump", 6, 0.5)): "'action$jump' is 0.5 at step 6",
        edit("text", lambda a: a.update({"action$forward": np.array(["1"] * 12)})): "'action$forward' holds <U1 values",
        edit("empty", lambda a: a.update({k: v[:0] for k, v in a.items()})): "no actions ('reward' and the action arrays",
        edit("short-reward", lambda a: a.update({"reward": a["reward"][:11]})): "'reward' has 11 rows, 12 (one per",
    }
    no_zip = edit("no-zip", None)
    no_zip.write_bytes(b"this is not a zip file" * 50)
    expected[no_zip] = "not an .npz archive (no zip structure in it); re-download the trajectory"
    zero = edit("zero", None)
    zero.write_bytes(b"")
    expected[zero] = "the file is empty (0 bytes)"
    good = edit("good", None)
    (good.parent / "metadata.json").write_text(json.dumps({"true_video_frame_count": 5}))  # the video has 16
    summary = run([env], tmp_path / "ds", format="minerl")
    failed = {f["error"].split(": ", 1)[0]: f["error"].split(": ", 1)[1] for f in summary["failed"]}
    assert summary["ingested"] == ["good"] and len(failed) == len(expected), summary
    for path, words in expected.items():
        assert words in failed[str(path)], (path, failed[str(path)])
        assert "Error" not in failed[str(path)] and "pickle" not in failed[str(path)]
    assert frame_number(Dataset(tmp_path / "ds").frames("good").frames) == list(range(3, 15))


# ---- plain video, Ray workers ----------------------------------------------------------------------

@pytest.mark.ray
def test_video_folder_on_ray_workers(tmp_path):
    from worldloom.io import write_video

    for i, n in enumerate((30, 25, 20)):
        write_video(tmp_path / "clips" / f"c{i}.mp4", frames_of(n, 64, first=i), fps=20, pix_fmt="yuv444p", crf=10)
    # --num-workers 0: one actor per CPU of the (local) cluster, as in every command of Ray actors
    summary = run([tmp_path / "clips"], tmp_path / "ds", format="video", resolution="48x32", num_workers=0)
    assert sorted(summary["ingested"]) == ["c0.mp4", "c1.mp4", "c2.mp4"] and summary["num_steps"] == 75
    ds = Dataset(tmp_path / "ds")
    assert validate(tmp_path / "ds") == [] and (ds.spec.width, ds.spec.height) == (48, 32)
    clip = ds.frames("c1.mp4")
    assert clip.label_source == "none" and clip.buttons is None and len(clip.frames) == 25


# ---- format version 1 still reads ----------------------------------------------------------------

def write_version_1(root: Path) -> np.ndarray:
    """A format-version-1 dataset as WorldLoom 0.1 wrote it: its manifest, and shards of the 31 v1 columns."""
    from worldloom.datasets import DatasetWriter

    root.mkdir()
    manifest = {"format": "worldloom-dataset", "format_version": 1, "height": 32, "width": 32, "fps": 20, "codec": "raw",
                "channels": 3, "rows_per_group": 256, "action_space": action_space(1), "label_sources": [],
                "num_episodes": 0, "num_frames": 0, "shards": [], "config": {"made_by": "0.1"}}
    (root / "dataset.json").write_text(json.dumps(manifest))
    (root / "frames").mkdir()
    frames = frames_of(12, 32)
    with DatasetWriter(root, 32, 32) as w:  # appending keeps the dataset's version: 1
        w.add_episode("old", frames, buttons=np.zeros((12, 20), bool), camera=np.zeros((12, 2), np.float32))
        with pytest.raises(UserError, match="has state_x values, which a format version 1 dataset cannot hold"):
            w.add_episode("new", frames, buttons=np.zeros((12, 20), bool), camera=np.zeros((12, 2), np.float32),
                          state={"x": np.arange(12.0)})
    return frames


def test_version_1_reads_validates_and_upgrades_by_merge(tmp_path):
    import pyarrow.parquet as pq

    frames = write_version_1(tmp_path / "v1")
    shard = next((tmp_path / "v1" / "frames").glob("*.parquet"))
    assert pq.read_schema(shard).names == schema.FRAME_SCHEMA_V1.names
    ds = Dataset(tmp_path / "v1")
    assert ds.version == 1 and validate(tmp_path / "v1") == []
    np.testing.assert_array_equal(ds.frames("old").frames, frames)
    assert ds.read_table("old", columns=["step", "state_x", "null_action"]).column("state_x").null_count == 12
    assert main(["dataset", "inspect", str(tmp_path / "v1")]) == 0
    assert main(["dataset", "merge", str(tmp_path / "v1"), "--out", str(tmp_path / "v2")]) == 0
    up = Dataset(tmp_path / "v2")
    assert up.version == schema.FORMAT_VERSION and validate(tmp_path / "v2") == []
    np.testing.assert_array_equal(up.frames("old").frames, frames)
    assert pq.read_schema(next((tmp_path / "v2" / "frames").glob("*.parquet"))).names == schema.FRAME_SCHEMA.names


# ---- what the issue is for: recordings in, an IDM trained on them ----------------------------------

@pytest.mark.slow
def test_vpt_and_minerl_datasets_train_an_idm(vpt_folder, tmp_path):
    write_minerl(tmp_path / "minerl" / "MineRLTreechop-v0" / "t1", 40, seed=3)
    run([vpt_folder], tmp_path / "vpt-ds", resolution="64")
    run([tmp_path / "minerl"], tmp_path / "minerl-ds", format="minerl")
    out = tmp_path / "idm"
    code = main(["idm", "train", "--data", str(tmp_path / "vpt-ds"), str(tmp_path / "minerl-ds"), "--preset", "micro",
                 "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--threads", "1"])
    assert code == 0 and (out / "checkpoint" / "model.safetensors").is_file()
    assert os.path.getsize(out / "metrics.csv") > 0


def test_plain_videos_as_vpt_suggest_format_video_and_a_run_folder_is_refused(tmp_path, capsys):
    from worldloom.io import write_video

    write_video(tmp_path / "clips" / "c0.mp4", frames_of(12, 64), fps=20, pix_fmt="yuv444p", crf=10)
    code = main(["dataset", "ingest", "--data", str(tmp_path / "clips"), "--out", str(tmp_path / "ds")])
    everything = capsys.readouterr().err
    err = everything.strip().splitlines()[-1]
    assert code == 2 and err.startswith("worldloom dataset: error: nothing was ingested:"), err
    assert "c0.mp4: no c0.jsonl beside it" in err and "for plain videos without actions pass --format video" in err
    assert everything.count("no c0.jsonl beside it") == 1, everything  # said once: no `skipped:` line before it
    assert not (tmp_path / "ds").exists()  # nothing ingested: no folder left behind (not even the job's lock)
    write_video(tmp_path / "clips" / "c1.mp4", frames_of(12, 64), fps=20, pix_fmt="yuv444p", crf=10)
    assert main(["dataset", "ingest", "--data", str(tmp_path / "clips"), "--out", str(tmp_path / "ds")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-3:] == [
        f"dataset ingest: skipped: {tmp_path / 'clips' / f'c{i}.mp4'}: no c{i}.jsonl beside it (a VPT recording is an .mp4 "
        "and a .jsonl of the same name); for plain videos without actions pass --format video" for i in (0, 1)] + [
        "worldloom dataset: error: nothing was ingested: 2 inputs skipped, for the reasons above"]
    # --out a pipeline run: refused in one line, nothing written there
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pipeline.json").write_text('{"stages": {}}')
    code = main(["dataset", "ingest", "--format", "video", "--data", str(tmp_path / "clips"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert f"--out {tmp_path / 'run'} holds a pipeline run (pipeline.json), not a WorldLoom dataset; give a new --out" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["pipeline.json"]


# ---- captions from what a recording knows ----------------------------------------------------------

def caption_lines(num: int = 80) -> list[dict]:
    """A VPT segment: 2 s walking forward (2 blocks/s) while turning right 5 degrees a frame and
    picking up oak logs, then 2 s standing still, holding the logs."""
    lines = []
    for t in range(num):
        line = vpt_line(t, keys=["w"] if t < 40 else [])
        moving = min(t, 40)
        line.update(xpos=100.5 + 0.1 * moving, yaw=10.0 + 5 * moving)
        line["inventory"] = [{"type": "oak_log", "quantity": 2 + moving // 10}]
        lines.append(line)
    return lines


def test_ingested_recordings_get_captions_of_what_they_know(tmp_path):
    """VPT's partial state (no biome, time of day, water, target or held item) and MineRL's (inventory,
    held item) caption each 2 s clip with the facts they have and nothing else; plain video gets none.
    The stored captions are the ones the rules make from the stored columns."""
    from worldloom.datasets.captions import caption_episode, read_caption, stored_captions

    write_vpt(tmp_path / "vpt" / "6.13", "walker", 80, lines=caption_lines(), size=64)
    run([tmp_path / "vpt"], tmp_path / "vpt-ds", resolution="32")
    ds = Dataset(tmp_path / "vpt-ds")
    clips = stored_captions(ds, "6.13/walker")
    assert [(c.start, c.stop) for c in clips] == [(0, 40), (40, 80)]
    assert clips[0].facts == {"activity": "walk", "turn": "look_around", "collected": ["oak log"]}, clips[0].text
    assert clips[1].facts == {"activity": "still"}, clips[1].text  # still, and the logs stay held in the inventory
    assert clips[0].text.split(" ")[0] in ("walks", "strolls", "moves") and "then" in clips[0].text
    for text in (c.text for c in clips):  # no fact the recording does not have
        assert not {"biome", "time", "held", "target"} & set(read_caption(text)), text
        assert not any(w in text for w in ("plains", "forest", "daylight", "night", "dusk", "holding", "looking at"))
    assert [c.text for c in clips] == [c.text for c in caption_episode(ds, "6.13/walker")]
    # MineRL: no position, so no motion; an empty hand and the logs it gathered
    write_minerl(tmp_path / "minerl" / "MineRLTreechop-v0" / "t1", 30, seed=1)
    run([tmp_path / "minerl"], tmp_path / "minerl-ds", format="minerl")
    mds = Dataset(tmp_path / "minerl-ds")
    (clip,) = stored_captions(mds, "MineRLTreechop-v0/t1")
    assert (clip.start, clip.stop) == (0, 30) and clip.facts == {"held": "air", "collected": ["log"]}, clip.text
    assert clip.text.startswith(("empty-handed, then", "with bare hands, then")), clip.text
    # plain video: nothing known, the caption column stays null
    from worldloom.io import write_video

    write_video(tmp_path / "clips" / "c0.mp4", frames_of(60, 64), fps=20, pix_fmt="yuv444p", crf=10)
    run([tmp_path / "clips"], tmp_path / "video-ds", format="video", resolution="32")
    vds = Dataset(tmp_path / "video-ds")
    assert vds.read_table("c0.mp4", columns=["caption"]).column("caption").null_count == 60
    assert stored_captions(vds, "c0.mp4") == []


def test_a_recording_whose_video_is_shorter_than_its_lines_is_captioned_by_what_it_stores(tmp_path):
    """70 frames, 80 jsonl lines, logs picked up at line 75: the last stored clip (steps 40-69) was captioned from
    the whole jsonl ("then collects oak log", an event past its last stored step; a new-user trial). Now the stored
    captions are those the rules make from the stored rows, as `dataset captions` makes them again."""
    from worldloom.datasets.captions import caption_episode, stored_captions

    lines = caption_lines(80)
    for line in lines[75:]:
        line["inventory"] = [{"type": "oak_log", "quantity": 20}]
    write_vpt(tmp_path / "vpt" / "6.13", "short", 70, lines=lines, size=64)
    run([tmp_path / "vpt"], tmp_path / "ds", resolution="32")
    ds = Dataset(tmp_path / "ds")
    assert ds.episode("6.13/short").num_steps == 70
    clips = stored_captions(ds, "6.13/short")
    assert [(c.start, c.stop) for c in clips] == [(0, 40), (40, 70)]
    assert "collected" not in clips[1].facts, clips[1].text
    assert [c.text for c in clips] == [c.text for c in caption_episode(ds, "6.13/short")]


def plant_orphans(root: Path) -> list[Path]:
    """What a killed writer leaves under frames/: a half-written temporary and a whole, uncommitted shard."""
    orphans = [root / "frames" / ".part-dead-00000.parquet.0badf00d.tmp", root / "frames" / "part-dead-00000.parquet"]
    for path in orphans:
        path.write_bytes(b"left by a killed run")
    return orphans


def test_a_rerun_sweeps_what_a_killed_ingest_left_and_a_second_job_is_refused(tmp_path):
    import fcntl

    from worldloom.datasets.jobs import JOB_LOCK_NAME
    from worldloom.io import write_video

    write_video(tmp_path / "clips" / "c0.mp4", frames_of(12, 64), fps=20, pix_fmt="yuv444p", crf=10)
    run([tmp_path / "clips"], tmp_path / "ds", format="video")
    from worldloom.datasets.summary import format_summary, summarize

    summary = summarize(tmp_path / "ds")  # a plain video: no known player, no split yet; never `None`
    assert summary["players"] == summary["splits"] == {"unset": 1} and "None" not in format_summary(summary)
    orphans = plant_orphans(tmp_path / "ds")
    assert len(validate(tmp_path / "ds")) == 2  # both reported as leftovers
    summary = run([tmp_path / "clips"], tmp_path / "ds", format="video")  # the same command again
    assert summary["skipped_done"] == 1 and summary["num_orphans_removed"] == 2
    assert not any(p.exists() for p in orphans) and validate(tmp_path / "ds") == []
    with open(tmp_path / "ds" / JOB_LOCK_NAME, "w") as held:  # as a running capture, ingest or label job holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="ds: another job .* is writing here"):
            run([tmp_path / "clips"], tmp_path / "ds", format="video")


def test_a_ctrl_c_half_way_keeps_the_inputs_ingested_before_it(tmp_path, monkeypatch):
    """Each input is committed as it finishes: a Ctrl-C during the second keeps the first."""
    from worldloom.datasets.ingest import Ingester
    from worldloom.io import write_video

    for i in range(2):
        write_video(tmp_path / "clips" / f"c{i}.mp4", frames_of(12, 64, first=i), fps=20, pix_fmt="yuv444p", crf=10)
    real = Ingester.ingest

    def interrupted_at_the_second(self, item):
        if item["name"] == "c1.mp4":
            raise KeyboardInterrupt  # what a Ctrl-C raises while the second input is read
        return real(self, item)

    monkeypatch.setattr(Ingester, "ingest", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        run([tmp_path / "clips"], tmp_path / "ds", format="video")
    assert Dataset(tmp_path / "ds").episode_ids == ["c0.mp4"]
    monkeypatch.setattr(Ingester, "ingest", real)
    summary = run([tmp_path / "clips"], tmp_path / "ds", format="video")
    assert summary["skipped_done"] == 1 and summary["ingested"] == ["c1.mp4"]


def test_a_folder_reads_cameras_suffixes_and_says_what_it_left_out(tmp_path, capsys):
    """AVCHD's .MTS and a phone's .3gp are videos; a macOS `._` file, notes and a broken link are not: left out,
    and said (a link whose target was gone was dropped without a word)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "CAM0001.MTS", num_frames=12, container_format="mpegts")
    write_video(clips / "phone.3gp", num_frames=10, container_format="mp4")
    (clips / "._phone.3gp").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # what a copy from a Mac leaves
    (clips / "notes.txt").write_text("day 1")
    (clips / "day2.mp4").symlink_to(tmp_path / "moved-away.mp4")  # a link whose recording was moved: not silent
    summary = run([clips], tmp_path / "ds", format="video")
    assert sorted(summary["ingested"]) == ["CAM0001.MTS", "phone.3gp"] and not summary["failed"]
    assert (f"dataset ingest: left out 2 file(s) of {clips} not named as videos (.txt 1, hidden 1); pass one as the "
            f"input to read it anyway; and 1 broken link(s) in {clips}, whose target is gone (day2.mp4)"
            in capsys.readouterr().err)


def test_a_long_video_shows_its_steps_and_a_tiny_one_names_resolution(tmp_path, capsys):
    """One long video was "0/1 item" until it was done: the bar now counts the steps stored, part by part. A 6x6
    video said "height must be an int in 8..4096, got 6" with no way out: it now names --resolution, which
    ingests it."""
    import cv2

    def write_avi(path: Path, frames: np.ndarray) -> str:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, frames.shape[1:3][::-1])
        for frame in frames:
            writer.write(frame)
        writer.release()
        return str(path)

    long = write_avi(tmp_path / "long.avi", np.random.default_rng(0).integers(0, 256, (300, 64, 64, 3), dtype=np.uint8))
    assert main(["dataset", "ingest", "--data", long, "--format", "video", "--out", str(tmp_path / "ds")]) == 0
    err = capsys.readouterr().err
    shown = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) steps, [\d,]+ steps/s", err)]
    assert 256 in shown and shown[-1] == 300, err  # after the first part, then the whole file
    tiny = write_avi(tmp_path / "tiny.avi", np.repeat(np.arange(0, 200, 20, dtype=np.uint8), 108).reshape(10, 6, 6, 3))
    assert main(["dataset", "ingest", "--data", tiny, "--format", "video", "--out", str(tmp_path / "t")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{tiny}: frames 6x6, and a dataset stores 8 to 4096 pixels a side: pass --resolution WxH" in line, line
    assert main(["dataset", "ingest", "--data", tiny, "--format", "video", "--out", str(tmp_path / "t"), "--resolution", "16x16"]) == 0
    assert Dataset(tmp_path / "t").frames("tiny.avi").frames.shape[1:3] == (16, 16)


def test_ctrl_c_while_actors_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C during `dataset ingest --num-workers 2` left the actors' frames/.part-*.tmp behind, which
    `dataset validate` reported until a rerun (a new-user trial, session 32): the interrupted job sweeps
    what it left, under its lock, as a finished one does. The actors are stood in for by a write and a
    Ctrl-C in the job's own process (a key press cannot be sent to Ray actors here)."""
    import worldloom.datasets.ingest as ingest_module

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", num_frames=20)
    out = tmp_path / "out"
    run([videos], out, format="video")

    def interrupted(cfg, found, bad):
        (out / "frames" / ".part-vm-1-00009.parquet.0a1b2c3d.tmp").write_bytes(b"half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest_module, "_ingest_locked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run([videos], out, format="video")
    assert not list((out / "frames").glob(".*.tmp")) and validate(str(out)) == []
