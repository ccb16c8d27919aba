"""`worldloom dataset ingest` and `idm label` on inputs as real downloads and folders have them: text
files written by other tools, symlinked folders, names that differ in case, hand-written lists,
trajectories whose arrays disagree. Good-but-unusual input just works; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from recordings import frame_number, frames_of, vpt_lines, write_minerl, write_vpt

from worldloom.datasets import Dataset
from worldloom.datasets.ingest import IngestConfig, ingest
from worldloom.datasets.validate import validate
from worldloom.errors import UserError


def run(data, out, **kwargs) -> dict:
    return ingest(IngestConfig(data=tuple(str(d) for d in data), out=str(out), **kwargs))


# ---- text as other tools write it ----------------------------------------------------------------

def test_jsonl_with_bom_crlf_blank_lines_and_a_cut_off_last_line_ingests(tmp_path):
    """A jsonl saved by a Windows editor (BOM, CRLF, a stray blank line) from a recording stopped
    mid-write (13 lines for 12 frames, the 13th cut off) is read line for line, with a warning."""
    lines = vpt_lines(13)
    _, jsonl = write_vpt(tmp_path / "in" / "6.8", "rec", 12, lines=lines)
    text = [json.dumps(line) for line in lines]
    text.insert(5, "")  # not a frame: shifts nothing
    text[-1] = text[-1][:50]  # no newline after it: the recorder stopped there
    jsonl.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(text).encode())
    minerl = write_minerl(tmp_path / "minerl" / "MineRLTreechop-v0" / "t", 10)
    meta = minerl / "metadata.json"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    summary = run([tmp_path / "in"], tmp_path / "ds")
    assert summary["ingested"] == ["6.8/rec"] and not summary["failed"], summary
    assert any("rec.jsonl: its last line is cut off" in w and "12 whole lines" in w for w in summary["warnings"])
    ds = Dataset(tmp_path / "ds")
    assert ds.read_table("6.8/rec", columns=["state_tick"]).column("state_tick").to_pylist() == list(range(12))
    assert frame_number(ds.frames("6.8/rec").frames) == list(range(12))
    env_config = json.loads(ds.episodes.to_pylist()[0]["env_config"])
    assert env_config["jsonl_passed_over"] == {"blank_lines": 1, "partial_last_line": True}
    minerl_summary = run([tmp_path / "minerl"], tmp_path / "ds-minerl", format="minerl")
    assert minerl_summary["ingested"] == ["MineRLTreechop-v0/t"] and validate(tmp_path / "ds-minerl") == []
    np.testing.assert_array_equal(Dataset(tmp_path / "ds-minerl").frames("MineRLTreechop-v0/t").terminated[-1], True)


# ---- folders as people assemble them ----------------------------------------------------------------

def test_symlinked_folders_are_searched_once_and_keep_their_names(tmp_path):
    """Recordings gathered as links to other disks are found (Path.rglob skipped them); a link back to
    an ancestor does not loop, and a folder linked twice is read once."""
    from test_idm_vpt import released_files

    from worldloom.io import write_video
    from worldloom.pipeline.cli import main

    disk = tmp_path / "disk"
    write_vpt(disk / "6.8", "rec", 12)
    write_minerl(disk / "minerl" / "MineRLTreechop-v0" / "t", 10)
    write_video(disk / "clips" / "a.mp4", frames_of(10), fps=20, pix_fmt="yuv444p", crf=10)
    data = tmp_path / "data"
    for name in ("vpt", "minerl", "video"):
        (data / name).mkdir(parents=True)
    (data / "vpt" / "6.8").symlink_to(disk / "6.8")
    (data / "vpt" / "again").symlink_to(disk / "6.8")  # the same folder twice
    (data / "vpt" / "loop").symlink_to(data)  # a link to an ancestor
    (data / "minerl" / "MineRLTreechop-v0").symlink_to(disk / "minerl" / "MineRLTreechop-v0")
    (data / "video" / "clips").symlink_to(disk / "clips")
    vpt = run([data / "vpt"], tmp_path / "ds")
    assert vpt["ingested"] == ["6.8/rec"] and not vpt["failed"], vpt
    assert json.loads(Dataset(tmp_path / "ds").episodes.to_pylist()[0]["env_config"])["recorder_version"] == "6.8"
    assert run([data / "minerl"], tmp_path / "ds-minerl", format="minerl")["ingested"] == ["MineRLTreechop-v0/t"]
    assert run([data / "video"], tmp_path / "ds-video", format="video")["ingested"] == ["clips/a.mp4"]
    (tmp_path / "model").mkdir()
    spec = f"vpt:{released_files(tmp_path / 'model', 'tiny')}"
    assert main(["idm", "label", "--model", spec, "--data", str(data / "video"), "--out", str(tmp_path / "lab")]) == 0
    assert Dataset(tmp_path / "lab").episode_ids == ["clips/a.mp4:0000"]


def test_vpt_pairs_whose_names_differ_in_case_are_paired(tmp_path):
    """`REC.MP4` beside `rec.jsonl` (copied through Windows or a FAT drive) is one recording, in a folder
    and given as a file; where two videos differ only in case, only the exact names pair."""
    folder = tmp_path / "in" / "6.8"
    video, _ = write_vpt(folder, "rec", 12)
    video.rename(folder / "REC.MP4")
    write_vpt(folder, "b", 10, seed=1)[1].rename(folder / "b.JSONL")
    write_vpt(folder, "c", 8, seed=2)
    write_vpt(folder, "C", 8, seed=3)[1].unlink()  # C.mp4 and c.mp4: two videos, one jsonl (c's)
    summary = run([tmp_path / "in"], tmp_path / "ds")
    assert sorted(summary["ingested"]) == ["6.8/REC", "6.8/b", "6.8/c"], summary
    assert [f["error"].split(":")[0] for f in summary["failed"]] == [str(folder / "C.mp4")]
    assert Dataset(tmp_path / "ds").frames("6.8/REC").buttons.shape == (12, 20)
    single = run([folder / "REC.MP4"], tmp_path / "ds-single")
    assert single["ingested"] == ["REC"] and not single["failed"]


# ---- paths as people write them -----------------------------------------------------------------

def test_lists_take_comments_spaces_and_home_and_vpt_paths_take_home(tmp_path, monkeypatch):
    """A hand-written .txt list (a BOM, CRLF, `#` comments, blank lines, names with spaces, `~`) reads
    as written; `--model vpt:~/...` finds the weights as the shell would."""
    from test_idm_vpt import released_files

    from worldloom.idm import checkpoint

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_vpt(tmp_path / "my recs", "rec one", 12)
    write_vpt(tmp_path / "home" / "recs", "b", 10, seed=1)
    video, jsonl = write_vpt(tmp_path / "pairs", "c", 8, seed=2)
    jsonl.rename(tmp_path / "pairs" / "c actions.jsonl")
    lines = ["# recordings of day 1", "", "my recs/rec one.mp4", "~/recs/b.jsonl",
             "pairs/c.mp4 pairs/c actions.jsonl  ", '"pairs/c.mp4" "pairs/c actions.jsonl"']
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    summary = run([tmp_path / "list.txt"], tmp_path / "ds")
    assert sorted(summary["ingested"]) == ["b", "c", "rec one"] and not summary["failed"], summary
    (tmp_path / "bad.txt").write_text("# fine\nmy recs/rec one.mp4\nmy recs/absent.mp4\n")
    with pytest.raises(UserError, match=r"bad.txt line 3: .*my recs/absent.mp4 does not exist"):
        run([tmp_path / "bad.txt"], tmp_path / "ds")
    (tmp_path / "home" / "models").mkdir()
    released_files(tmp_path / "home" / "models", "tiny")
    assert checkpoint.model_config("vpt:~/models/tiny.weights").num_frames == 8


def test_vpt_spec_naming_the_download_folder_uses_its_one_weights_file(tmp_path):
    """`vpt:models/` (the folder 4x_idm.weights and .model were downloaded into) said 'no such file'."""
    from test_idm_vpt import released_files

    from worldloom.idm import checkpoint

    (tmp_path / "models").mkdir()
    released_files(tmp_path / "models", "tiny")
    assert checkpoint.model_config(f"vpt:{tmp_path / 'models'}").num_frames == 8
    assert checkpoint.checkpoint_id(f"vpt:{tmp_path / 'models'}").startswith("vpt:tiny.weights@sha256-")
    released_files(tmp_path / "models", "tiny-memory")
    with pytest.raises(UserError, match=r"models: a folder holding 2 .weights/.safetensors files \(tiny-memory.weights, "
                                        r"tiny.weights\); pass vpt:PATH/4x_idm.weights"):
        checkpoint.model_config(f"vpt:{tmp_path / 'models'}")


# ---- MineRL arrays that disagree ------------------------------------------------------------------

def test_minerl_arrays_of_other_lengths_are_one_line_and_column_vectors_read(tmp_path):
    """An observation array shorter than the trajectory's states is one line naming the key (it was a
    bare `ValueError: all input arrays must have the same shape`); a reward stored as (N, 1), bool keys
    and float64 arrays read as (N,)."""
    env = tmp_path / "MineRLTreechop-v0"
    for name in ("short-obs", "column"):
        write_minerl(env / name, 10)
    path = env / "short-obs" / "rendered.npz"
    arrays = dict(np.load(path))
    arrays["observation$inventory$log"] = arrays["observation$inventory$log"][:6]
    np.savez(path, **arrays)
    path = env / "column" / "rendered.npz"
    arrays = dict(np.load(path))
    arrays["reward"] = arrays["reward"].astype(np.float64)[:, None]
    arrays["action$forward"] = arrays["action$forward"].astype(bool)
    np.savez(path, **arrays)
    summary = run([env], tmp_path / "ds", format="minerl")
    assert summary["ingested"] == ["column"], summary
    assert [f["error"] for f in summary["failed"]] == [
        f"{env / 'short-obs' / 'rendered.npz'}: 'observation$inventory$log' has 6 rows, 11 (one per state) expected: "
        "'reward' and the action arrays have 10; the trajectory is inconsistent (re-download it)"]
    clip = Dataset(tmp_path / "ds").frames("column")
    np.testing.assert_array_equal(clip.rewards, arrays["reward"][:, 0])
    assert validate(tmp_path / "ds") == []


def test_jsonl_fields_of_another_type_are_one_line_naming_the_field(tmp_path):
    """A field of another type than the recorder writes was misread silently ("false" as an open GUI, a
    string of keys letter by letter) or ended in a bare TypeError; now one line names line and field."""
    cases = {"mixed-keys": ("keyboard", "keys", [None, "key.keyboard.w", 5]),
             "string-keys": ("keyboard", "keys", "key.keyboard.w"), "gui-text": (None, "isGuiOpen", "false"),
             "button-text": ("mouse", "buttons", ["0"]), "dx-text": ("mouse", "dx", "abc"), "dx-bool": ("mouse", "dx", True),
             "dy-nan": ("mouse", "dy", float("nan")), "dx-list": ("mouse", "dx", [5, 5]), "hotbar-42": (None, "hotbar", 42),
             # a whole number too big for a float raised OverflowError; a field in other letters read as absent (a GUI
             # line lost its scaling; a new-user trial, session 58)
             "dx-huge": ("mouse", "dx", 10**400), "gui-case": (None, "IsGuiOpen", True), "keys-case": ("keyboard", "Keys", [])}
    for name, (group, key, value) in cases.items():
        lines = vpt_lines(12)
        (lines[4][group] if group else lines[4])[key] = value
        write_vpt(tmp_path / "in", name, 12, lines=lines)
    write_vpt(tmp_path / "in", "good", 12)
    summary = run([tmp_path / "in"], tmp_path / "ds")
    assert summary["ingested"] == ["good"]
    errors = sorted(f["error"] for f in summary["failed"])
    assert [e.split(": field ")[0] for e in errors] == [
        str(tmp_path / "in" / f"{name}.jsonl line 5") for name in sorted(cases)], errors
    assert all("TypeError" not in e for e in errors)
    assert any('field keyboard.keys is "key.keyboard.w", a list of key names expected' in e for e in errors), errors
    assert any('field isGuiOpen is "false", true or false expected' in e for e in errors), errors
    # a camera read as 0 without a word was a label the IDM then learned: NaN, text, true, a list
    assert any('field mouse.dy is NaN, a finite number of pixels expected' in e for e in errors), errors
    assert any('field mouse.dx is "abc", a finite number of pixels expected' in e for e in errors), errors
    assert any("field hotbar is 42, a slot number 0..8 expected" in e for e in errors), errors
    assert any("field mouse.dx is 1000000000" in e and "a finite number of pixels expected" in e for e in errors), errors
    assert any("field IsGuiOpen is spelled isGuiOpen by VPT's recorder (names are case-sensitive)" in e for e in errors)
    assert any("field keyboard.Keys is spelled keyboard.keys by VPT's recorder" in e for e in errors), errors
    lines = vpt_lines(12)
    lines[3]["mouse"]["dy"] = None  # null is absent: no move, counted in the episode's conversion
    write_vpt(tmp_path / "in2", "nulls", 12, lines=lines)
    assert run([tmp_path / "in2"], tmp_path / "ds2")["ingested"] == ["nulls"]
    (row,) = Dataset(tmp_path / "ds2").episodes.to_pylist()
    conversion = json.loads(row["env_config"])["conversion"]
    assert conversion["camera_null_steps"] == 1


def test_a_minerl_folder_missing_its_npz_is_reported_not_passed_over(tmp_path):
    """A partial download (recording.mp4 and metadata.json, no rendered.npz) was not found at all: the job
    said 'ingested 1 of 1 input' and exited 0."""
    env = tmp_path / "MineRLTreechop-v0"
    write_minerl(env / "good", 10)
    (write_minerl(env / "partial", 10) / "rendered.npz").unlink()
    summary = run([tmp_path], tmp_path / "ds", format="minerl")
    assert summary["ingested"] == ["MineRLTreechop-v0/good"] and summary["num_items"] == 2
    assert [f["error"] for f in summary["failed"]] == [
        f"{env / 'partial'}: no rendered.npz (a MineRL v0 trajectory folder holds recording.mp4, rendered.npz and "
        "metadata.json)"]


# ---- re-runs ---------------------------------------------------------------------------------------

def test_a_rerun_at_another_resolution_is_refused_up_front(tmp_path):
    """The same command again with another --resolution said 'ingested 0 of 1 input; 1 already there'
    and exited 0: the user believed the dataset was now at the new size."""
    write_vpt(tmp_path / "in" / "6.8", "rec", 12)
    assert run([tmp_path / "in"], tmp_path / "ds", resolution="32")["ingested"] == ["6.8/rec"]
    with pytest.raises(UserError, match=r"^--resolution 48: .*ds stores 32x32 frames \(a dataset holds one size\); "
                                        r"pass --resolution 32x32 to add to it, or give a new --out$"):
        run([tmp_path / "in"], tmp_path / "ds", resolution="48")
    assert run([tmp_path / "in"], tmp_path / "ds", resolution="32x32")["skipped_done"] == 1
    assert Dataset(tmp_path / "ds").spec.height == 32


def test_a_rerun_at_another_fps_is_refused_up_front(tmp_path):
    """`--fps 10` into a dataset of video stored at 20 said 'ingested 0 of 1 input; 1 already there' and exited
    0 (the video was never resampled to 10): refused in one line, writing nothing."""
    from videos import write_video

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4", num_frames=20)
    assert run([tmp_path / "in"], tmp_path / "ds", format="video", fps=20)["ingested"] == ["clip.mp4"]
    manifest = (tmp_path / "ds" / "dataset.json").read_text()
    with pytest.raises(UserError, match=r"^--fps 10: .*ds stores 20 steps per second \(a dataset holds one rate\); "
                                        r"pass --fps 20 to add to it, or give a new --out$"):
        run([tmp_path / "in"], tmp_path / "ds", format="video", fps=10)
    write_vpt(tmp_path / "vpt", "rec", 12)
    with pytest.raises(UserError, match=r"^--fps 20: .*ds10 stores 10 steps per second .*vpt recordings are stored at 20"):
        run([tmp_path / "in"], tmp_path / "ds10", format="video", fps=10)
        run([tmp_path / "vpt"], tmp_path / "ds10")
    assert (tmp_path / "ds" / "dataset.json").read_text() == manifest
    assert run([tmp_path / "in"], tmp_path / "ds", format="video", fps=20)["skipped_done"] == 1


def test_a_rerun_over_a_shard_cut_short_is_not_already_there(tmp_path):
    """The --out's shard cut to half (a copy or sync broken off), the same command again said 'ingested 0 of 1
    inputs; 1 already there', exit 0: the input was counted done by its committed episode while its frames were
    lost. Now one line names the shard and the repair; after the repair the command makes it again."""
    from videos import write_video

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "clip.mp4", num_frames=20)
    assert run([tmp_path / "in"], tmp_path / "ds", format="video")["ingested"] == ["clip.mp4"]
    shard = next((tmp_path / "ds" / "frames").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UserError, match=rf"^{tmp_path / 'ds'}/frames/{shard.name}: size is \d+ bytes, dataset.json "
                                        rf"says \d+; its episodes count as done, so run `worldloom dataset repair "
                                        rf"{tmp_path / 'ds'}`, then this command again"):
        run([tmp_path / "in"], tmp_path / "ds", format="video")
    from worldloom.datasets.repair import repair

    repair(tmp_path / "ds")
    assert run([tmp_path / "in"], tmp_path / "ds", format="video")["ingested"] == ["clip.mp4"]
    assert Dataset(tmp_path / "ds").num_frames == 20 and validate(tmp_path / "ds") == []


def test_a_rerun_adds_in_the_datasets_codec_and_refuses_another_up_front(tmp_path):
    """A jpeg dataset's command run again for a new recording without --codec (the help said 'of a new
    dataset') refused it with 'give a new --out'; another --codec with nothing new said '1 already there'."""
    write_vpt(tmp_path / "in" / "6.8", "a", 12)
    assert run([tmp_path / "in"], tmp_path / "ds", resolution="32", codec="jpeg")["ingested"] == ["6.8/a"]
    write_vpt(tmp_path / "in" / "6.8", "b", 12, seed=1)
    manifest = (tmp_path / "ds" / "dataset.json").read_text()
    with pytest.raises(UserError, match=r"^--codec png: .*ds stores jpeg frames \(a dataset holds one codec\); "
                                        r"leave --codec out \(or pass --codec jpeg\) to add to it, or give a new --out$"):
        run([tmp_path / "in"], tmp_path / "ds", resolution="32", codec="png")
    assert (tmp_path / "ds" / "dataset.json").read_text() == manifest
    summary = run([tmp_path / "in"], tmp_path / "ds", resolution="32")
    assert (summary["ingested"], summary["skipped_done"], summary["failed"]) == (["6.8/b"], 1, [])
    assert Dataset(tmp_path / "ds").spec.codec == "jpeg" and validate(tmp_path / "ds") == []
    assert run([tmp_path / "in"], tmp_path / "new", resolution="32")["ingested"] and \
        Dataset(tmp_path / "new").spec.codec == "raw"  # a new dataset's default


def test_a_recorder_version_vpt_never_named_is_refused(tmp_path, capsys):
    """`--recorder-version v6.8` silently meant "no GUI scaler" (1.0 where 6.8 needs 2.0)."""
    from worldloom.pipeline.cli import main

    write_vpt(tmp_path / "in", "rec", 12)
    code = main(["dataset", "ingest", "--data", str(tmp_path / "in"), "--out", str(tmp_path / "ds"),
                 "--recorder-version", "v6.8"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not (tmp_path / "ds").exists()
    assert "--recorder-version must be a version as VPT's folders name it (5.7, 5.8, 6.7, 6.8, 6.9, 10.0, ...), " \
           "got 'v6.8'" in err
    assert run([tmp_path / "in"], tmp_path / "ds", recorder_version="6.8")["ingested"] == ["rec"]
    assert json.loads(Dataset(tmp_path / "ds").episodes.to_pylist()[0]["env_config"])["gui_mouse_scaler"] == 2.0


def test_an_unknown_recorder_version_with_gui_mouse_moves_is_said(tmp_path):
    """Recordings saved flat (not under their `<version>/` folder) had their GUI mouse moves kept at
    scale 1 in silence; now a warning says how many and what to pass."""
    write_vpt(tmp_path / "flat", "rec", 12)
    write_vpt(tmp_path / "flat" / "6.8", "rec", 12, seed=1)
    summary = run([tmp_path / "flat"], tmp_path / "ds")
    assert sorted(summary["ingested"]) == ["6.8/rec", "rec"]
    said = [w for w in summary["warnings"] if "recorder version unknown" in w]
    assert len(said) == 1 and said[0].startswith(f"{tmp_path / 'flat' / 'rec.jsonl'}: recorder version unknown "
                                                 "(its folder 'flat' is not one"), said
    assert "mouse moves with a GUI open kept at scale 1" in said[0] and "(pass --recorder-version)" in said[0]


def test_a_rerun_with_the_recorder_version_asked_for_converts_again(tmp_path, capsys):
    """The warning above says 'pass --recorder-version'; the same command with it was '1 already there'
    (same files), and the GUI mouse moves stayed at scale 1. The version is part of how the input is
    made: another one ingests it again and replaces its episode, said in one line; the same is done."""
    write_vpt(tmp_path / "flat", "rec", 12)
    write_vpt(tmp_path / "flat" / "6.8", "other", 12, seed=1)  # its folder names the version: unchanged by the flag

    def scalers() -> dict:
        return {e["episode_id"]: json.loads(e["env_config"])["gui_mouse_scaler"]
                for e in Dataset(tmp_path / "ds").episodes.to_pylist()}

    assert sorted(run([tmp_path / "flat"], tmp_path / "ds")["ingested"]) == ["6.8/other", "rec"]
    assert scalers() == {"rec": 1.0, "6.8/other": 2.0}
    capsys.readouterr()
    summary = run([tmp_path / "flat" / "rec.jsonl"], tmp_path / "ds", recorder_version="6.8")
    assert summary["ingested"] == ["rec"] and summary["replaced"][0]["episodes"] == ["rec"]
    assert scalers() == {"rec": 2.0, "6.8/other": 2.0} and validate(tmp_path / "ds") == []
    err = capsys.readouterr().err
    assert "1 input(s) in" in err and "recorder version unknown, now recorder version 6.8): ingested again" in err
    assert run([tmp_path / "flat" / "rec.jsonl"], tmp_path / "ds", recorder_version="6.8")["skipped_done"] == 1
    again = run([tmp_path / "flat" / "6.8"], tmp_path / "ds", recorder_version="6.8")  # the folder's own version
    assert again["skipped_done"] == 1 and again["ingested"] == []


def test_the_summary_counts_play_at_the_datasets_own_rate(tmp_path):
    """36 s of video ingested at --fps 10 are 360 steps: the last line said '0.3 min of play', its steps
    counted at the game's 20 per second (a new-user trial, session 59; field case 01's kind). The minutes are
    the stored steps at the rate the dataset holds."""
    from videos import write_video

    from worldloom.progress import job_summary

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "minute.mp4", num_frames=36, rate=1)  # 36 s
    for fps in (10, 20):
        summary = run([tmp_path / "in"], tmp_path / f"ds{fps}", format="video", fps=fps)
        assert summary["num_steps"] == 36 * fps
        assert f"({36 * fps:,} steps, 0.6 min of play)" in job_summary("dataset ingest", "ingested", summary)


# ---- the output inside an input folder -----------------------------------------------------------

def test_an_out_inside_the_input_folder_is_not_scanned_as_input(tmp_path, capsys):
    """`dataset ingest --data videos --out videos/ds`, run again (a resume, more footage): the dataset's own files
    (dataset.json, episodes.parquet, shards, its locks) were listed as "left out 7 file(s) of videos not named as
    videos (.json 1, .parquet 4, hidden 2)" until 2026-12-08; they are not inputs, and a file that is (notes.txt)
    is still said. `idm label --data videos --out videos/pseudo` scans the same way."""
    from videos import write_video

    from worldloom.idm.label import LabelConfig, discover

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        write_video(videos / f"v{i}.mp4", num_frames=12 + i)
    (videos / "notes.txt").write_text("day 1\n")
    for attempt in range(2):
        summary = run([videos], videos / "ds", format="video", fps=20)
        assert len(summary["ingested"]) == (2 if attempt == 0 else 0) and not summary["failed"], summary
        err = capsys.readouterr().err
        assert f"left out 1 file(s) of {videos} not named as videos (.txt 1)" in err, err
        assert ".parquet" not in err and "hidden" not in err, err
    kind, found = discover(LabelConfig(model="unused", data=str(videos), out=str(videos / "ds")))
    assert kind == "videos" and [item["source"] for item, _ in found] == [str(videos / "v0.mp4"), str(videos / "v1.mp4")]
    assert ".parquet" not in capsys.readouterr().err


# ---- an input replaced by a copy of another ------------------------------------------------------

@pytest.mark.parametrize("copied", ["v2 over v0", "v0 over v2"])
def test_an_input_replaced_by_a_copy_of_another_is_its_duplicate_on_a_resume(tmp_path, capsys, copied):
    """A resume after one input was overwritten with another's bytes (`cp v2.mp4 v0.mp4`): until 2026-12-08 it was
    ingested again as a changed input, so the dataset held that content twice (v0 and v2), while duplicates among
    the inputs of one job are made once. Now it is the other's duplicate whichever comes first, and its stale
    episodes (of the content it held before) leave the dataset."""
    import shutil

    from videos import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"v{i}.mp4", num_frames=12 + 4 * i)
    out = tmp_path / "ds"
    assert len(run([videos], out, format="video", fps=20)["ingested"]) == 3
    src, dst = ("v2", "v0") if copied == "v2 over v0" else ("v0", "v2")
    shutil.copy(videos / f"{src}.mp4", videos / f"{dst}.mp4")
    capsys.readouterr()
    summary = run([videos], out, format="video", fps=20)
    assert summary["ingested"] == [] and [d["input"] for d in summary["duplicates"]] == [str(videos / f"{dst}.mp4")]
    assert "held other content before, whose episodes leave the dataset" in capsys.readouterr().err
    ds = Dataset(out)
    assert sorted(ds.episode_ids) == sorted(["v1.mp4", f"{src}.mp4"]) and validate(out) == []
    assert ds.episode(f"{src}.mp4").num_steps == 12 + 4 * int(src[1])  # the copied content, once
    assert run([videos], out, format="video", fps=20)["skipped_done"] == 3  # and done on the next resume


def test_inputs_whose_contents_moved_between_them_are_both_made_again(tmp_path):
    """v0 overwritten with v2's old bytes while v2 got new content: v2's old episodes are stale, so v0 is not their
    duplicate (the content would have left with them): both are made again, each content once."""
    import shutil

    from videos import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"v{i}.mp4", num_frames=12 + 4 * i)
    out = tmp_path / "ds"
    run([videos], out, format="video", fps=20)
    shutil.copy(videos / "v2.mp4", videos / "v0.mp4")
    write_video(videos / "v2.mp4", num_frames=30)
    summary = run([videos], out, format="video", fps=20)
    assert sorted(summary["ingested"]) == ["v0.mp4", "v2.mp4"] and not summary["duplicates"], summary
    ds = Dataset(out)
    assert sorted(ds.episode_ids) == ["v0.mp4", "v1.mp4", "v2.mp4"] and validate(out) == []
    assert sorted(ds.episode(e).num_steps for e in ds.episode_ids) == [16, 20, 30]
