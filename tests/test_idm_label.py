"""`worldloom idm label` on plain video files: time from timestamps, chunks that do not change labels,
resume by content, truncated files, bad files, the Ray pool."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ListeningSockets, start_v2_dataset
from test_idm import play, write_dataset
from videos import (
    frame_index,
    on_screen,
    painted,
    truncate,
    write_audio_with_cover,
    write_video,
    write_with_cover,
)

from worldloom.datasets import Dataset
from worldloom.datasets.validate import validate
from worldloom.datasets.video import read_video
from worldloom.errors import UserError
from worldloom.idm import checkpoint, load_idm, predict
from worldloom.idm.label import LabelConfig, label
from worldloom.idm.train import TrainConfig
from worldloom.idm.train import main as train_main
from worldloom.pipeline.cli import main as cli


def write_mp4(path, frames: np.ndarray, fps: float) -> str:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A micro IDM trained for two steps on real VoxelWorld play."""
    root = tmp_path_factory.mktemp("idm")
    data = write_dataset(root / "data", [play(24, 0), play(24, 1)])
    return str(train_main(TrainConfig(data=(data,), out=str(root / "run"), preset="micro", max_steps=2, batch_size=2,
                                      warmup_steps=1, eval_every=2, checkpoint_every=2, val_fraction=0)))


@pytest.fixture(scope="module")
def clip():
    """60 steps of 96x64 VoxelWorld play (not the model's 64x64)."""
    return play(60, 4, size=64)[0].repeat(3, axis=2)[:, :, ::2]  # (60, 64, 96, 3)


def test_label_an_mp4_resampled_to_20_fps(run, clip, tmp_path):
    video = write_mp4(tmp_path / "play.mp4", clip, fps=30)
    out = tmp_path / "pseudo"
    assert cli(["idm", "label", "--model", run, "--data", video, "--out", str(out), "--chunk-steps", "16"]) == 0
    ds = Dataset(out)
    assert ds.spec.fps == 20 and (ds.spec.height, ds.spec.width) == (64, 96)  # frames kept at their size
    assert ds.episode_ids == ["play.mp4:0000", "play.mp4:0001", "play.mp4:0002"]
    decoded, _ = read_video(video, fps=20)
    assert len(decoded) == 40  # 60 frames at 30 fps -> 40 steps at 20
    stored = np.concatenate([ds.frames(e).frames for e in ds.episode_ids])
    assert np.array_equal(stored, decoded)  # the decoded frames, unchanged
    first = ds.frames("play.mp4:0000")
    assert first.label_source == "idm" and first.label_model == checkpoint.checkpoint_id(run) + "+likely+hold7+still"
    assert ((first.label_confidence > 0) & (first.label_confidence <= 1)).all()
    env_config = json.loads(ds.episodes.column("env_config")[1].as_py())
    assert env_config["source_fps"] == pytest.approx(30) and env_config["first_step"] == 16
    assert env_config["decode"]["timestamps"] == "pts" and not env_config["truncated"]
    assert "presentation timestamps" in ds.manifest["config"]["time_resampling"]["rule"]


def test_bad_files_are_reported_and_skipped(run, clip, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_mp4(videos / "good.mp4", clip[:20], fps=20)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (videos / "empty.mp4").write_bytes(b"")
    summary = label(LabelConfig(model=run, data=str(videos), out=str(tmp_path / "out")))
    errors = {f["input"].split("/")[-1]: f["error"] for f in summary["failed"]}
    assert summary["labeled"] == ["good.mp4"] and sorted(errors) == ["corrupt.mp4", "empty.mp4"]
    assert "empty" in errors["empty.mp4"]
    assert Dataset(tmp_path / "out").episode_ids == ["good.mp4:0000"]
    # Run again: the good file is skipped as done, the bad ones fail again; the exit code says so.
    assert cli(["idm", "label", "--model", run, "--data", str(videos), "--out", str(tmp_path / "out")]) == 1



def test_a_clip_shorter_than_the_window_is_labeled_with_a_warning(run, clip, tmp_path, capsys):
    """Its real steps are predicted as any video's first window is (what `predict` gives), the window filled
    with its last frame; the summary says so. One step has no motion to label: refused in one line."""
    short = write_mp4(tmp_path / "short.mp4", clip[:5], fps=20)  # 5 steps; the micro model's window is 8
    summary = label(LabelConfig(model=run, data=short, out=str(tmp_path / "out")))
    assert summary["labeled"] == ["short.mp4"] and summary["num_steps"] == 5
    assert summary["warnings"] == [
        f"{short}: 5 steps (0.25 s at 20 fps), shorter than the model's window of 8 (0.40 s): labeled with its last "
        "frame repeated to fill the window (the padded steps dropped); its last steps' labels are the least sure"]
    stored = Dataset(tmp_path / "out").frames("short.mp4:0000")
    frames, _ = read_video(short, fps=20)
    expected = predict(load_idm(run, device="cpu")[0], frames, hold_steps=7)  # labels hold movement keys over 7
    assert np.array_equal(stored.frames, frames) and np.array_equal(stored.label_confidence, expected["confidence"])
    short_again = write_mp4(tmp_path / "again.mp4", clip[5:10], fps=20)
    assert cli(["idm", "label", "--model", run, "--data", short_again, "--out", str(tmp_path / "out")]) == 0
    assert f"idm label: warning: {short_again}: 5 steps (0.25 s at 20 fps), shorter than" in capsys.readouterr().err
    one = write_mp4(tmp_path / "one.mp4", clip[:1], fps=20)
    assert cli(["idm", "label", "--model", run, "--data", one, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{one}: 1 step(s) at 20 fps: an IDM reads an action from the motion between frames" in err, err

def test_footage_of_another_size_than_out_names_the_flags_that_fit_it(run, clip, tmp_path, capsys):
    out = tmp_path / "pseudo"
    square = write_mp4(tmp_path / "square.mp4", play(20, 5, size=64)[0], fps=20)  # the model's 64x64
    assert cli(["idm", "label", "--model", run, "--data", square, "--out", str(out)]) == 0
    assert "-> 64x64" not in capsys.readouterr().err  # the model's size: nothing resized, nothing said
    wide = write_mp4(tmp_path / "wide.mp4", clip[:20], fps=30)  # 96x64 (resampled to 20 fps) into a 64x64 dataset
    code = cli(["idm", "label", "--model", run, "--data", wide, "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "96x64" in err and "--frames model" in err and "--out" in err, err
    assert "height=" not in err
    assert cli(["idm", "label", "--model", run, "--data", wide, "--out", str(out), "--frames", "model"]) == 0
    assert sorted(Dataset(out).episode_ids) == ["square.mp4:0000", "wide.mp4:0000"]
    assert ("idm label: frames 96x64 -> 64x64 (aspect 1.5 -> 1) for the model's input; stored resized (--frames model)\n"
            in capsys.readouterr().err)



def test_a_folder_of_videos_of_several_sizes_is_told_to_store_them_at_the_models_size(run, clip, tmp_path, capsys):
    """A folder of a 96x64 and a 64x64 video: the first one stored sets the dataset's size, the other was skipped
    with "give a new --out", which meets the same first video again. The skip now names --frames model (with a new
    --out, the dataset being at another size than the model's), and that command labels both."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_mp4(folder / "a.mp4", clip[:20], fps=20)  # 96x64, stored first
    write_mp4(folder / "b.mp4", play(20, 5, size=64)[0], fps=20)  # 64x64, the model's
    assert cli(["idm", "label", "--model", run, "--data", str(folder), "--out", str(tmp_path / "p1")]) == 1
    err = capsys.readouterr().err
    (skip,) = [line for line in err.replace("\r", "\n").splitlines() if "b.mp4" in line and "skipped" in line]
    assert "; inputs of several sizes go in one dataset with --frames model with a new --out (every input stored at " \
           "the model's 64x64)" in skip, skip
    assert cli(["idm", "label", "--model", run, "--data", str(folder), "--out", str(tmp_path / "p2"), "--frames", "model"]) == 0
    assert sorted(Dataset(tmp_path / "p2").episode_ids) == ["a.mp4:0000", "b.mp4:0000"]



def test_a_video_too_small_to_store_names_the_video_and_the_flag(run, clip, tmp_path, capsys):
    """A 6x6 video said "nothing was labeled: OUT: height must be an int in 8..4096, got 6": the output named, the
    input not, no way out. Now the line names the video and --frames model, which labels it."""
    tiny = write_mp4(tmp_path / "tiny.mp4", np.ascontiguousarray(clip[:20, 20:26, 30:36]), fps=20)
    out = tmp_path / "pseudo"
    assert cli(["idm", "label", "--model", run, "--data", tiny, "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{tiny}: frames 6x6, and a dataset stores 8 to 4096 pixels a side: pass --frames model to store them at " \
           "the model's 64x64" in line, line
    assert cli(["idm", "label", "--model", run, "--data", tiny, "--out", str(out), "--frames", "model"]) == 0
    assert Dataset(out).frames("tiny.mp4:0000").frames.shape == (20, 64, 64, 3)



def test_an_empty_dataset_a_failed_label_job_left_does_not_refuse_the_next(run, clip, tmp_path, capsys):
    """A 1-frame clip is refused, and its job had created the dataset at the clip's size: the same --out then
    refused a 48x40 video ("the dataset stores 64x64 frames ... give a new --out"; a new-user trial, session 57).
    The failed run's empty dataset stays (its 0 steps can be read, field case 05 reads them); the next run
    removes it under its lock and stores its own size. A dataset with episodes keeps its size."""
    one = write_mp4(tmp_path / "one.mp4", clip[:1], fps=20)
    other = write_mp4(tmp_path / "other.mp4", np.ascontiguousarray(clip[:20, :40, :48]), fps=20)
    out = tmp_path / "pseudo"
    assert cli(["idm", "label", "--model", run, "--data", one, "--out", str(out)]) == 2
    assert "a clip needs 2 steps at least" in capsys.readouterr().err and Dataset(out).num_frames == 0
    assert cli(["idm", "label", "--model", run, "--data", other, "--out", str(out)]) == 0
    assert Dataset(out).episode_ids == ["other.mp4:0000"] and Dataset(out).spec.width == 48 and validate(out) == []
    assert cli(["idm", "label", "--model", run, "--data", one, "--out", str(out)]) == 2
    assert Dataset(out).episode_ids == ["other.mp4:0000"]  # a dataset with episodes stays as it is
    wide = write_mp4(tmp_path / "wide.mp4", np.ascontiguousarray(clip[:20, :40, :56]), fps=20)
    assert cli(["idm", "label", "--model", run, "--data", wide, "--out", str(out)]) == 2
    assert "the dataset stores 48x40 frames" in capsys.readouterr().err.strip().splitlines()[-1]


def test_inputs_of_one_job_with_the_same_content_are_named_not_already_there(run, clip, tmp_path, capsys):
    """A copy and a link of one video in a folder labeled into a new --out read "2 already there", with no word
    of which (a new-user trial, session 57): they are made once, said before the work, and counted apart."""
    import shutil

    folder = tmp_path / "videos"
    folder.mkdir()
    write_mp4(folder / "a.mp4", clip[:20], fps=20)
    write_mp4(folder / "other.mp4", clip[20:40], fps=20)
    shutil.copy(folder / "a.mp4", folder / "copy of a.mp4")
    shutil.copy(folder / "a.mp4", folder / "b.mp4")
    assert cli(["idm", "label", "--model", run, "--data", str(folder), "--out", str(tmp_path / "pseudo")]) == 0
    out, err = capsys.readouterr()
    assert "idm label: 2 input(s) hold the same content as another input and are made once: " in err, err
    assert "copy of a.mp4 (as " in err and "b.mp4 (as " in err and "already there" not in err, err
    assert "labeled 2 of 4 inputs" in out and "; 2 the same as another input (made once)" in out, out
    assert sorted(Dataset(tmp_path / "pseudo").episode_ids) == ["a.mp4:0000", "other.mp4:0000"]


def test_a_dataset_given_as_the_model_is_named_first(run, clip, tmp_path, capsys):
    """`idm label --model DATASET --data DATASET`: "every episode already has labels" came first, and the real
    mistake only after --all-episodes (a new-user trial, session 57); the model is checked before the inputs."""
    video = write_mp4(tmp_path / "play.mp4", clip[:20], fps=20)
    labels = tmp_path / "pseudo"
    assert cli(["idm", "label", "--model", run, "--data", video, "--out", str(labels)]) == 0
    capsys.readouterr()
    assert cli(["idm", "label", "--model", str(labels), "--data", str(labels), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{labels}: not an IDM run (config.json is missing)")


def test_an_address_that_is_not_used_says_so(run, clip, tmp_path, capsys):
    """`--address HOST:PORT --num-workers 1` labeled in this process without a word about the cluster asked for."""
    video = write_mp4(tmp_path / "play.mp4", clip[:20], fps=20)
    assert cli(["idm", "label", "--model", run, "--data", video, "--out", str(tmp_path / "p"), "--address", "nowhere:1",
                "--num-workers", "1"]) == 0
    assert "idm label: note: --address nowhere:1 is not used: with --num-workers 1, labeling runs in this process" in \
        capsys.readouterr().err


def test_a_rerun_sweeps_what_a_killed_label_job_left(run, clip, tmp_path):
    from test_ingest import plant_orphans

    video = write_mp4(tmp_path / "play.mp4", clip[:20], fps=20)
    out = tmp_path / "pseudo"
    assert label(LabelConfig(model=run, data=video, out=str(out)))["labeled"] == ["play.mp4"]
    orphans = plant_orphans(out)
    summary = label(LabelConfig(model=run, data=video, out=str(out)))  # the same command again
    assert summary["skipped_done"] == 1 and summary["num_orphans_removed"] == 2
    assert not any(p.exists() for p in orphans) and validate(out) == []


def test_a_ctrl_c_half_way_keeps_the_videos_labeled_before_it(run, clip, tmp_path, monkeypatch):
    """Each video is committed as it finishes: a Ctrl-C during the second keeps the first, and the re-run
    labels only the second."""
    from worldloom.idm.label import Labeler

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        write_mp4(videos / f"v{i}.mp4", clip[i * 20:i * 20 + 20], fps=20)  # two contents: two inputs
    real = Labeler.label

    def interrupted_at_the_second(self, item):
        if item["name"] == "v1.mp4":
            raise KeyboardInterrupt  # what a Ctrl-C raises while the second video is labeled
        return real(self, item)

    monkeypatch.setattr(Labeler, "label", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        label(LabelConfig(model=run, data=str(videos), out=str(tmp_path / "out")))
    assert Dataset(tmp_path / "out").episode_ids == ["v0.mp4:0000"]
    monkeypatch.setattr(Labeler, "label", real)
    summary = label(LabelConfig(model=run, data=str(videos), out=str(tmp_path / "out")))
    assert summary["skipped_done"] == 1 and summary["labeled"] == ["v1.mp4"]


def test_a_folder_of_frames_is_said_to_be_frames_with_how_to_make_a_video(tmp_path, capsys):
    """A folder of a recording's frames (frame_000050ms.png, ...) said only 'holds no video files', and `dataset
    ingest` 'pass one as the input to read it anyway', which refuses it as an image (a new-user trial, session 59;
    field case 01's kind: no time is known for a frame, so none is made up). It says they are frames, and how to
    join them into a video at their rate."""
    from worldloom.idm.label import discover

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(10):
        cv2.imwrite(str(frames / f"frame_{50 * i:06d}ms.png"), painted(i))
    (frames / "notes.txt").write_text("recorded at 20 fps")
    with pytest.raises(UserError, match="holds no dataset.json and no video files"):
        discover(LabelConfig(model="unused", data=str(frames), out=str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert f"left out 10 still picture(s) of {frames} (.png 10): frames, not a video" in err, err
    assert f"ffmpeg -framerate 20 -pattern_type glob -i '{frames}/*.png'" in err, err
    assert f"and 1 file(s) of {frames} not named as videos (.txt 1); pass one as the input" in err, err


def test_a_folder_finds_cameras_suffixes_and_says_what_it_left_out(tmp_path, capsys):
    from worldloom.idm.label import discover

    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "CAM0001.MTS", num_frames=12, container_format="mpegts")
    (clips / "sub" / ".hidden.mp4").parent.mkdir()
    (clips / "sub" / ".hidden.mp4").write_bytes(b"not one")
    (clips / "cover.jpg").write_bytes(b"\xff\xd8")
    kind, found = discover(LabelConfig(model="unused", data=str(clips), out=str(tmp_path / "out")))
    assert kind == "videos" and [item["source"] for item, _ in found] == [str(clips / "CAM0001.MTS")]
    assert "left out 2 file(s) of" in capsys.readouterr().err



def test_the_video_is_labeled_not_its_cover_art(run, tmp_path, capsys):
    clip = write_with_cover(tmp_path / "clip.mp4", "mp4 cover first", num_frames=12)  # the picture is stream #0
    summary = label(LabelConfig(model=run, data=clip, out=str(tmp_path / "out")))
    assert summary["labeled"] == ["clip.mp4"] and summary["num_steps"] == 12
    ds = Dataset(tmp_path / "out")
    assert (ds.spec.height, ds.spec.width) == (64, 64) and frame_index(ds.frames("clip.mp4:0000").frames) == list(range(12))
    decode = json.loads(ds.episodes.column("env_config")[0].as_py())["decode"]
    assert decode["video_stream"] == 1 and decode["num_video_streams"] == 2
    song = write_audio_with_cover(tmp_path / "song.m4a")  # only cover art: was labeled as "1 steps"
    assert cli(["idm", "label", "--model", run, "--data", song, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{song}: no video stream (only an attached picture)" in err and "Traceback" not in err, err

def test_one_unreadable_file_is_a_one_line_error(run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video")
    assert cli(["idm", "label", "--model", run, "--data", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("worldloom idm: error:") and "notes.txt" in err
    assert cli(["idm", "label", "--model", run, "--data", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o")]) == 2


def test_every_episode_labeled_already_needs_a_flag(run, tmp_path, capsys):
    data = write_dataset(tmp_path / "labeled", [play(12, 0)])
    assert cli(["idm", "label", "--model", run, "--data", data, "--out", str(tmp_path / "o")]) == 2
    assert "--all-episodes" in capsys.readouterr().err
    assert cli(["idm", "label", "--model", run, "--data", data, "--out", str(tmp_path / "o"), "--all-episodes"]) == 0
    assert Dataset(tmp_path / "o").frames("ep-0").label_source == "idm"


@pytest.mark.ray
def test_a_pool_of_ray_actors_labels_a_folder(run, clip, tmp_path):
    import ray

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_mp4(videos / f"v{i}.mp4", clip[i * 5:i * 5 + 30], fps=20)
    try:
        with ListeningSockets() as sockets:  # the pool's session (ray_session, local): on loopback only
            summary = label(LabelConfig(model=run, data=str(videos), out=str(tmp_path / "out"), num_workers=2, threads=1))
    finally:
        ray.shutdown()
    assert not sockets.outside_loopback(), "listening beyond loopback:\n" + sockets.table()
    assert any(t.startswith("ray::Labeler") for ts in sockets.seen.values() for t in ts), sockets.table()
    assert sorted(summary["labeled"]) == ["v0.mp4", "v1.mp4", "v2.mp4"] and not summary["failed"]
    ds = Dataset(tmp_path / "out")
    assert sorted(ds.episode_ids) == ["v0.mp4:0000", "v1.mp4:0000", "v2.mp4:0000"] and ds.num_frames == 90


def labels(root) -> dict[str, np.ndarray]:
    """Frames and labels of a dataset's episodes, in episode-id order, joined."""
    ds = Dataset(root)
    clips = [ds.frames(e) for e in sorted(ds.episode_ids)]
    return {k: np.concatenate([getattr(c, k) for c in clips]) for k in ("frames", "buttons", "camera", "label_confidence")}


def test_labels_follow_presentation_timestamps(run, tmp_path):
    """Field case 01: 10 fps for 2 s, then 40 fps; step k stores the frame on screen at k / 20 s."""
    pts_ms = [int(t) for t in np.cumsum([0] + [100] * 20 + [25] * 19)]
    video = write_video(tmp_path / "vfr.mp4", pts_ms=pts_ms)
    assert cli(["idm", "label", "--model", run, "--data", video, "--out", str(tmp_path / "out"), "--fps", "20"]) == 0
    assert frame_index(labels(tmp_path / "out")["frames"]) == on_screen(pts_ms, 20)
    assert Dataset(tmp_path / "out").manifest["config"]["time_resampling"]["fps"] == 20


def test_any_chunk_steps_gives_the_same_labels_at_every_step(run, clip, tmp_path):
    """Field case 07: chunks of 3, 8 (the window) and 13 steps label every step as one pass does, to the bit."""
    video = write_mp4(tmp_path / "play.mp4", clip[:45], fps=20)
    results = {}
    for chunk in (1000, 3, 8, 13):
        out = tmp_path / f"out{chunk}"
        label(LabelConfig(model=run, data=video, out=str(out), chunk_steps=chunk, batch_size=1))
        results[chunk] = labels(out)
        assert len(Dataset(out).episode_ids) == -(-45 // chunk)
    for chunk in (3, 8, 13):
        for key, value in results[1000].items():
            assert np.array_equal(results[chunk][key], value), (chunk, key)


def test_a_long_video_shows_its_steps_as_they_are_predicted(run, clip, tmp_path, capsys, monkeypatch):
    """`idm label` on one long video showed "0/1 item" until the file was done (an hour of play is one input).
    Videos are now read and predicted PROGRESS_STEPS at a time and the bar counts the steps; the pieces give the
    labels of one pass, to the bit."""
    from worldloom.idm import label as label_module

    video = write_mp4(tmp_path / "play.mp4", clip[:45], fps=20)
    label(LabelConfig(model=run, data=video, out=str(tmp_path / "whole"), chunk_steps=20, batch_size=1))
    monkeypatch.setattr(label_module, "PROGRESS_STEPS", 6)
    capsys.readouterr()
    assert cli(["idm", "label", "--model", run, "--data", video, "--out", str(tmp_path / "pieces"), "--chunk-steps", "20",
                "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    shown = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) steps, [\d,]+ steps/s", err)]
    assert shown and shown[-1] == 45 and 6 in shown, err  # counted piece by piece, up to the whole video
    assert len(Dataset(tmp_path / "pieces").episode_ids) == 3  # episodes stay --chunk-steps long
    for key, value in labels(tmp_path / "whole").items():
        assert np.array_equal(labels(tmp_path / "pieces")[key], value), key


def test_an_input_kept_truncated_is_not_done_for_a_rerun_without_the_flag(run, tmp_path, capsys):
    """A cut download labeled with --keep-truncated stayed "already there" on a rerun without the flag, which
    would have skipped it as truncated: the flag's choice outlived the run that made it. Now the rerun reads
    it again, as a run without the flag would (skipped as truncated, the kept episodes left as they are), and
    one line says why; a rerun with the flag counts it as done."""
    whole = write_video(tmp_path / "whole.mp4", num_frames=40, container_options={"movflags": "faststart"})
    (tmp_path / "videos").mkdir()
    truncate(whole, tmp_path / "videos" / "clip.mp4")
    out = str(tmp_path / "out")
    argv = ["idm", "label", "--model", run, "--data", str(tmp_path / "videos"), "--out", out]
    assert cli([*argv, "--keep-truncated"]) == 0
    kept = Dataset(out).num_frames
    assert 0 < kept < 40
    capsys.readouterr()
    assert cli(argv) == 2  # as a run without the flag on a new --out: the only input skipped as truncated
    err = capsys.readouterr().err
    assert (f"idm label: 1 input(s) in {out} were kept truncated by a run with --keep-truncated (e.g. "
            f"{tmp_path / 'videos' / 'clip.mp4'}): not done without the flag, so read again") in err, err
    assert "clip.mp4: truncated: decoded" in err and "already" not in err, err
    assert Dataset(out).num_frames == kept and validate(out) == []  # nothing already written is lost
    summary = label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out, keep_truncated=True))
    assert summary["skipped_done"] == 1 and summary["labeled"] == []


def test_done_by_content_truncated_then_repaired_and_same_names_elsewhere(run, tmp_path, capsys):
    """Field case 05: a cut download is reported, not counted as done; the repaired file replaces it;
    the same name in another folder is another input."""
    whole = write_video(tmp_path / "whole.mp4", num_frames=40, container_options={"movflags": "faststart"})
    (tmp_path / "videos").mkdir()
    clip_path = tmp_path / "videos" / "clip.mp4"
    truncate(whole, clip_path)
    out = str(tmp_path / "out")
    assert cli(["idm", "label", "--model", run, "--data", str(tmp_path / "videos"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "clip.mp4: truncated: decoded" in err and "of the 40 frames its container lists" in err
    assert Dataset(out).num_frames == 0  # skipped: nothing of it is stored, nothing counts as done
    summary = label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out, keep_truncated=True))
    assert summary["truncated"][0]["expected_frames"] == 40 and "truncated: decoded" in summary["warnings"][0]
    cut_steps = Dataset(out).num_frames
    assert cut_steps < 20 and json.loads(Dataset(out).episodes.column("env_config")[0].as_py())["truncated"]

    clip_path.write_bytes(open(whole, "rb").read())  # the download is repaired: same name, whole file
    summary = label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out))
    assert summary["labeled"] == ["clip.mp4"] and summary["replaced"][0]["episodes"] == ["clip.mp4:0000"]
    ds = Dataset(out)
    assert ds.episode_ids == ["clip.mp4:0000"] and ds.num_frames == 40 and validate(out) == []
    assert frame_index(labels(out)["frames"]) == list(range(40))
    assert label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out))["skipped_done"] == 1

    (tmp_path / "run2").mkdir()
    write_video(tmp_path / "run2" / "clip.mp4", num_frames=30)  # same name, another recording
    summary = label(LabelConfig(model=run, data=str(tmp_path / "run2"), out=out))
    assert summary["labeled"][0].startswith("clip.mp4~") and Dataset(out).num_frames == 70


def test_inputs_another_model_labeled_are_not_done(run, tmp_path, capsys):
    """'Done' is the same input labeled by the same weights: after the IDM is retrained (another checkpoint
    id under any run name), a rerun into the same --out labels every input again and its episodes replace
    the old model's (they were all 'already there', and new inputs mixed in beside them)."""
    import torch

    from worldloom.idm.checkpoint import save_idm

    model, _ = load_idm(run)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    trained_on = json.loads((Path(run) / "config.json").read_text())["train"]
    retrained = str(save_idm(tmp_path / "retrained", model, train=trained_on, step=3))
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", num_frames=30)
    footage = write_dataset(tmp_path / "footage", [play(12, 1)], labeled=False)
    for data in (str(tmp_path / "videos"), footage):
        out = str(tmp_path / f"out-{len(data)}")
        assert label(LabelConfig(model=run, data=data, out=out))["labeled"]
        capsys.readouterr()
        summary = label(LabelConfig(model=retrained, data=data, out=out))
        assert summary["skipped_done"] == 0 and len(summary["labeled"]) == len(summary["replaced"]) == 1
        assert "were labeled by another model" in capsys.readouterr().err
        ds = Dataset(out)
        assert len(ds) == 1 and set(ds.episodes.column("label_model").to_pylist()) == {checkpoint.checkpoint_id(retrained) + "+likely+hold7+still"}
        assert validate(out) == []
        assert label(LabelConfig(model=retrained, data=data, out=out))["skipped_done"] == 1


def test_videos_at_another_fps_than_the_idm_learned_are_refused_up_front(run, tmp_path, capsys):
    """`--fps 10` labeled videos with an IDM that learned 20 steps per second: each 1/10 s step read as a
    1/20 s one, exit 0 (datasets at another rate were refused; videos, resampled to --fps, were not)."""
    video = write_video(tmp_path / "clip.mp4", num_frames=20)
    out = tmp_path / "out"
    assert cli(["idm", "label", "--model", run, "--data", video, "--out", str(out), "--fps", "10"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"error: --fps 10: IDM {run} learned 20 steps per second (it reads an action step for step, "
                         "so a 10 fps step would be read as a 1/20 s one); pass --fps 20: videos are resampled to it "
                         "as they are read"), line
    assert not out.exists()


def test_a_rerun_at_another_fps_is_refused_up_front(run, tmp_path, capsys):
    """`--fps 10` into labels stored at 20 said 'labeled 0 of 1 input; 1 already there' and exited 0
    (an IDM that did not record its rate, so that the videos' own rate is not refused first)."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run, old)
    doc = json.loads((old / "config.json").read_text())
    del doc["data"]
    (old / "config.json").write_text(json.dumps(doc))
    write_video(tmp_path / "clip.mp4", num_frames=20)
    out = str(tmp_path / "out")
    assert cli(["idm", "label", "--model", str(old), "--data", str(tmp_path / "clip.mp4"), "--out", out]) == 0
    capsys.readouterr()
    assert cli(["idm", "label", "--model", str(old), "--data", str(tmp_path / "clip.mp4"), "--out", out, "--fps", "10"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("error: --fps 10: " + out + " stores 20 steps per second (a dataset holds one rate); "
                         "pass --fps 20 to add to it, or give a new --out"), line


def _y4m(path, first: int) -> str:
    """20 uncompressed frames painted first, first + 1, ...: any two such files have the same size."""
    import av
    from videos import painted

    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=20)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(painted(first + i), format="rgb24")))
        out.mux(stream.encode())
    return str(path)


def test_a_file_replaced_keeping_its_size_and_mtime_is_labeled_again(run, tmp_path):
    """Another take copied over a clip with its times kept (`cp -p`, `rsync -t`, an archive's stored times)
    and the same size (uncompressed video of the same length) was 'already there' by size and mtime: its
    old labels stayed. The change time, which no copy sets, sends it to the hash."""
    import os
    import shutil

    (tmp_path / "videos").mkdir()
    clip = _y4m(tmp_path / "videos" / "clip.y4m", 0)
    out = str(tmp_path / "out")
    assert label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out))["labeled"] == ["clip.y4m"]
    before = os.stat(clip)
    shutil.copyfile(_y4m(tmp_path / "take2.y4m", 10), clip)
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(clip)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    summary = label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out))
    assert summary["skipped_done"] == 0 and summary["replaced"][0]["episodes"] == ["clip.y4m:0000"]
    assert frame_index(labels(out)["frames"]) == list(range(10, 30))
    assert label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=out))["skipped_done"] == 1


def test_ctrl_c_while_an_episode_is_written_leaves_no_temporary_file(run, tmp_path, monkeypatch):
    """A KeyboardInterrupt after a shard was opened (Ctrl-C mid-item) left frames/.part-*.tmp behind, which
    `dataset validate` then reported (a new-user trial, session 32): the open shard is dropped on the way out."""
    from worldloom.datasets import DatasetWriter
    from worldloom.datasets.validate import validate

    (tmp_path / "videos").mkdir()
    _y4m(tmp_path / "videos" / "first.y4m", 0)
    out = tmp_path / "out"
    label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=str(out)))
    _y4m(tmp_path / "videos" / "second.y4m", 10)
    written = DatasetWriter.add_episode

    def interrupted(self, *args, **kwargs):
        written(self, *args, **kwargs)  # the episode is in the open shard's temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(DatasetWriter, "add_episode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        label(LabelConfig(model=run, data=str(tmp_path / "videos"), out=str(out)))
    assert not list((out / "frames").glob(".*.tmp")) and validate(str(out)) == []
    assert Dataset(out).episode_ids == ["first.y4m:0000"]


def test_episodes_of_two_datasets_with_the_same_ids_are_distinct(run, tmp_path):
    first = write_dataset(tmp_path / "a", [play(12, 0)])
    second = write_dataset(tmp_path / "b", [play(12, 1)])
    out = str(tmp_path / "out")
    for data in (first, second, first):
        label(LabelConfig(model=run, data=data, out=out, all_episodes=True))
    ds = Dataset(out)
    assert sorted(ds.episode_ids)[0] == "ep-0" and sorted(ds.episode_ids)[1].startswith("ep-0~") and len(ds) == 2


def test_out_of_another_label_source_or_kind_is_refused_and_idm_labels_resume(run, tmp_path, capsys):
    from conftest import tree_digest

    from worldloom.checkpoint import write_run_config

    truth = write_dataset(tmp_path / "truth", [play(12, 0)])  # env labels (the ground truth)
    footage = write_dataset(tmp_path / "footage", [play(12, 1)], labeled=False)
    other_footage = write_dataset(tmp_path / "other-footage", [play(12, 3)], labeled=False)
    wm = tmp_path / "wm"
    wm.mkdir()
    write_run_config(wm, "world_model", {})  # what `pretrain train` writes first
    refused = {truth: "holds a dataset with 1 episode(s) of label_source env; IDM pseudo-labels are never mixed",
               other_footage: "holds a dataset with 1 episode(s) of label_source none",
               footage: "is the --data being labeled; give a new --out (the labels are a dataset of their own)",
               run: 'holds an IDM run (config.json with "kind": "idm"), not a WorldLoom dataset; give a new --out',
               str(wm): 'holds a world model run (config.json with "kind": "world_model"), not a WorldLoom dataset'}
    for out, message in refused.items():
        before = tree_digest(out)
        assert cli(["idm", "label", "--model", run, "--data", footage, "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"worldloom idm: error: --out {out} {message}" in err, err
        assert tree_digest(out) == before  # nothing written into the wrong folder
    assert Dataset(truth).episodes.column("label_source").to_pylist() == ["env"]
    # An IDM-labeled dataset is resumed: more IDM labels from the same model go into it.
    pseudo = str(tmp_path / "pseudo")
    more = write_dataset(tmp_path / "more", [play(12, 2)], labeled=False)
    assert cli(["idm", "label", "--model", run, "--data", footage, "--out", pseudo]) == 0
    assert cli(["idm", "label", "--model", run, "--data", more, "--out", pseudo]) == 0
    assert Dataset(pseudo).episodes.column("label_source").to_pylist() == ["idm", "idm"]


# ---- the footage's engine truth goes with its frames -------------------------------------------------

def _footage_with_truth(root, source: Dataset, version: int) -> str:
    """`source`'s episodes as footage (label_source none) that keeps its state columns, and its
    captions (version 3) or no caption column at all (version 2, as a WorldLoom of 2026-11 wrote it)."""
    from worldloom.datasets import DatasetWriter, schema

    if version == 2:
        start_v2_dataset(root)
    with DatasetWriter(root, 64, 64) as w:
        for eid in source.episode_ids:
            clip = source.frames(eid)
            state = source.read_table(eid, columns=list(schema.STATE_COLUMNS)).to_pydict()
            w.add_episode(eid, clip.frames, label_source="none", state=state, caption=clip.captions)
    return str(root)


def test_labeled_footage_keeps_its_state_and_captions(run, tmp_path):
    """The IDM gives the actions; the state columns and captions are the footage's own and come
    through unchanged; footage with state but no captions (format version 2) gets them made."""
    from worldloom.capture import Recorder
    from worldloom.capture.config import EpisodeSpec
    from worldloom.datasets import commit_shards, schema
    from worldloom.datasets.captions import caption_episode
    from worldloom.envs import make_env

    target = {"env": str(tmp_path / "env")}
    rec = Recorder(target, env="voxel", height=64, width=64, make_env=lambda name, h, w: make_env(
        name, height=h, width=w, world_size=(32, 32, 32), day_night=True, day_length=100))
    specs = [EpisodeSpec(f"ep-{i}", i, "voxel", seed=5 + i, player="mixture", steps=50, height=64, width=64)
             for i in range(2)]
    commit_shards(target["env"], rec.record([(spec, ("env",)) for spec in specs])["shards"]["env"])
    truth = Dataset(target["env"])
    footage = {3: _footage_with_truth(tmp_path / "footage3", truth, 3), 2: _footage_with_truth(tmp_path / "footage2", truth, 2)}
    state_names = [n for n in schema.STATE_COLUMNS if truth.read_table("ep-0", columns=[n]).column(n).null_count == 0]
    assert {"state_x", "state_biome", "state_time_of_day", "state_inventory"} <= set(state_names)
    for name, data, extra in (("footage3", footage[3], []), ("footage2", footage[2], []),
                              ("relabeled", target["env"], ["--all-episodes"])):
        out = tmp_path / f"pseudo-{name}"
        assert cli(["idm", "label", "--model", run, "--data", data, "--out", str(out), *extra]) == 0
        ds, src = Dataset(out), Dataset(data)
        assert ds.version == 3 and ds.episode_ids == ["ep-0", "ep-1"] and validate(out) == []
        for eid in ds.episode_ids:
            captions = ds.read_table(eid, columns=["caption"]).column("caption").to_pylist()
            expected = truth.read_table(eid, columns=["caption"]).column("caption").to_pylist()
            assert captions == expected and all(captions[:40]), name  # a 2 s clip, then 10 steps (too short: null)
            if name == "footage2":  # no caption column in the input: made by the rules from its state
                assert src.version == 2 and [c.text for c in caption_episode(src, eid)][0] == captions[0]
            assert ds.read_table(eid, columns=state_names).to_pydict() == truth.read_table(eid, columns=state_names).to_pydict()
            clip = ds.frames(eid)
            assert clip.label_source == "idm" and clip.label_model == checkpoint.checkpoint_id(run) + "+likely+hold7+still"


def test_labeling_an_empty_dataset_is_one_line_not_exit_0(run, tmp_path, capsys):
    """`idm label --data EMPTY` (a capture that recorded nothing yet) printed "labeled 0 of 0 inputs", exit 0,
    as if the footage were labeled. Now one line naming the dataset, exit 2, and no --out made."""
    from worldloom.datasets import DatasetWriter

    empty = tmp_path / "empty"
    DatasetWriter(empty, 64, 64).close()
    out = tmp_path / "pseudo"
    assert cli(["idm", "label", "--model", run, "--data", str(empty), "--out", str(out), "--num-workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{empty}: the dataset holds no episodes; nothing to label" in err, err
    assert not out.exists()


def test_labeling_a_dataset_into_itself_is_one_line(run, tmp_path, capsys):
    """`idm label --data DS --out DS --all-episodes` wrote the new labels beside the episodes they label
    (ep-0 and ep-0~24: the footage twice, under two ids), exit 0. Now one line, nothing written."""
    from conftest import tree_digest

    from worldloom.datasets import DatasetWriter

    ds = tmp_path / "pseudo"
    with DatasetWriter(ds, 64, 64) as w:
        frames, buttons, camera = play(24, 2)
        w.add_episode("ep-0", frames, buttons, camera, label_source="idm", label_model="m")  # resumable as --out
    before = tree_digest(ds)
    assert cli(["idm", "label", "--model", run, "--data", str(ds), "--out", f"{ds}/", "--all-episodes",
                "--num-workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--out {ds}/ is the --data being labeled; give a new --out" in err, err
    assert tree_digest(ds) == before


def test_lines_about_one_episode_of_a_dataset_name_the_episode(run, tmp_path, capsys):
    """Labeling a dataset, a 1-step episode was "skipped: DS: 1 step(s) ..." and a short one "warning: DS: 3
    steps ...": the dataset, not which of its episodes. Now each line names the episode."""
    from worldloom.datasets import DatasetWriter

    frames = play(4, 3)[0]
    with DatasetWriter(tmp_path / "short", 64, 64) as w:
        w.add_episode("s-1", frames[:1])
        w.add_episode("s-3", frames[:3])
    assert cli(["idm", "label", "--model", run, "--data", str(tmp_path / "short"), "--out", str(tmp_path / "pseudo"),
                "--num-workers", "1"]) == 1
    err = capsys.readouterr().err
    assert f"idm label: skipped: {tmp_path / 'short'} episode 's-1': 1 step(s) at 20 fps" in err, err
    assert f"idm label: warning: {tmp_path / 'short'} episode 's-3': 3 steps (0.15 s at 20 fps)" in err, err


def test_a_dataset_on_an_object_store_is_labeled_into_a_dataset_there(run, tmp_path, s3_bucket, capsys):
    """`idm label --data "s3://b/foot?E" --out "s3://b/pseudo?E"` said `--data s3:/b/foot?E does not exist`
    (pathlib folds the `//`): the one command that read no dataset from an object store. Now it labels one as
    it labels a local one, writes the pseudo-labels to the store, resumes them, and records the footage by its
    redacted URI; videos under a URI are one line, nothing written."""
    footage = [play(12, 1), play(12, 2)]
    data, out = write_dataset(s3_bucket.uri("foot"), footage, labeled=False), s3_bucket.uri("pseudo")
    local = str(tmp_path / "pseudo")
    label(LabelConfig(model=run, data=write_dataset(tmp_path / "foot", footage, labeled=False), out=local))
    argv = ["idm", "label", "--model", run, "--data", data, "--out", out, "--num-workers", "1"]
    assert cli(argv) == 0
    ds = Dataset(out)
    assert sorted(ds.episode_ids) == ["ep-0", "ep-1"] and set(ds.episodes.column("label_source").to_pylist()) == {"idm"}
    for key, value in labels(local).items():  # the same labels as the same footage labeled on local disk
        np.testing.assert_array_equal(labels(out)[key], value, err_msg=key)
    assert {"pseudo/dataset.json", "pseudo/episodes.parquet"} <= s3_bucket.keys("pseudo/")
    row = json.loads(ds.episodes.column("env_config").to_pylist()[0])
    assert row["idm_source"]["dataset"] == data and row["source_identity"]["origin"].startswith(f"{data}#ep-")
    capsys.readouterr()
    assert label(LabelConfig(model=run, data=data, out=out))["skipped_done"] == 2  # resumed: nothing labeled again
    # Videos on the store: one line naming the URI and what to do.
    s3_bucket.put("videos/clip.mp4", Path(write_mp4(tmp_path / "clip.mp4", footage[0][0], fps=20)).read_bytes())
    for where, what in (("videos", "holds no dataset.json"), ("videos/clip.mp4", "is a file, not a WorldLoom dataset"),
                        ("nothing", "does not exist")):
        assert cli([*argv[:5], s3_bucket.uri(where), "--out", s3_bucket.uri("pseudo2")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"worldloom idm: error: --data {s3_bucket.uri(where)} {what}; from an object store idm label "
                       "reads WorldLoom datasets only: copy videos to a local folder and give that folder (or "
                       "`worldloom dataset ingest --format video` them into a dataset on the store, and label that)"), err
    assert not s3_bucket.keys("pseudo2")


def test_a_full_or_read_only_out_stops_the_job_instead_of_skipping_every_video(run, clip, tmp_path, full_disk, capsys):
    """`idm label` to an --out on a full disk labeled every video and skipped each as if it were bad
    ('OSError: [Errno 28] ... No space left on device'), and on a read-only disk ended in a traceback
    (until 2026-12-08). The output's disk is no input's fault: one line, the job stops."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_mp4(videos / f"v{i}.mp4", clip[: 30 + i], fps=20)
    small = full_disk("60k")
    assert cli(["idm", "label", "--model", run, "--data", str(videos), "--out", str(small / "d")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "%|" not in line]
    assert "skipped" not in err and lines[-1].startswith("worldloom idm: error: no space left on the device"), err
    ro = full_disk("1m", read_only=True)
    assert cli(["idm", "label", "--model", run, "--data", str(videos), "--out", str(ro / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Read-only" in err and str(ro / "d") in err, err
