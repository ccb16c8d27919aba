"""`worldloom dataset ...`: validate catches each kind of bad input; inspect, export, merge, split."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import pixel_frames
from PIL import Image

from worldloom.datasets import Dataset, DatasetWriter
from worldloom.datasets.validate import validate
from worldloom.datasets.writer import file_checksum, parquet_options
from worldloom.errors import UserError
from worldloom.pipeline.cli import main


def tree_digest(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def first_shard(root) -> tuple[str, dict]:
    manifest = json.loads((root / "dataset.json").read_text())
    return manifest["shards"][0]["path"], manifest


def rewrite_shard(root, change) -> str:
    """Rewrite the first shard through `change(columns dict) -> columns dict`, keeping the
    manifest's size and checksum right, so that only the content problem remains."""
    rel, manifest = first_shard(root)
    path = root / rel
    table = pq.read_table(path)
    columns = change({n: table.column(n).combine_chunks() for n in table.column_names})
    pq.write_table(pa.table(columns, schema=table.schema), path, row_group_size=16, **parquet_options("raw"))
    import pyarrow.fs as pafs

    checksum, size = file_checksum(pafs.LocalFileSystem(), str(path))
    manifest["shards"][0].update(checksum=checksum, size_bytes=size)
    (root / "dataset.json").write_text(json.dumps(manifest))
    return rel


def run_validate(root, capsys) -> tuple[int, list[str]]:
    before = tree_digest(root)
    code = main(["dataset", "validate", str(root)])
    assert tree_digest(root) == before  # validate never writes
    return code, capsys.readouterr().err.strip().splitlines()


def test_valid_dataset_passes(small_dataset, capsys):
    assert main(["dataset", "validate", str(small_dataset)]) == 0
    assert "valid" in capsys.readouterr().out


def test_missing_extra_corrupt_and_truncated_shards(small_dataset, capsys, tmp_path):
    rel, manifest = first_shard(small_dataset)
    data = (small_dataset / rel).read_bytes()
    second = manifest["shards"][1]["path"]

    shutil.copy(small_dataset / second, small_dataset / "frames" / "part-stray-00000.parquet")
    (small_dataset / rel).unlink()
    code, lines = run_validate(small_dataset, capsys)
    assert code == 1
    assert any(rel in line and "missing" in line for line in lines), lines
    assert any("part-stray-00000.parquet" in line and "extra shard" in line for line in lines), lines
    with pytest.raises(Exception, match="missing"):
        Dataset(small_dataset).frames("ep-0")

    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (small_dataset / rel).write_bytes(bytes(corrupt))
    code, lines = run_validate(small_dataset, capsys)
    assert code == 1 and any(rel in line and "checksum" in line for line in lines), lines

    (small_dataset / rel).write_bytes(data[: len(data) // 2])
    code, lines = run_validate(small_dataset, capsys)
    assert any(rel in line and "truncated" in line for line in lines), lines
    assert any(rel in line and "not a readable Parquet file" in line for line in lines), lines
    # its two problems share a fix: the shard is named once in it (a new-user trial, session 57, read it twice)
    assert all(line.count(rel) <= 1 for line in lines if "what to do for" in line), lines
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-0", "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert f"{rel}: cannot read this shard" in err and "worldloom dataset validate" in err


def test_a_shard_rewritten_by_another_tool_is_named_with_what_changed_and_how_to_record_it(small_dataset, capsys,
                                                                                             tmp_path):
    """A shard rewritten with other compression and row groups reads as before, but its bytes are not those
    dataset.json recorded. Whether to accept it is the user's call: validate says the file still reads whole, what
    differs and the two values that record it (following that passes validate), not 'truncated or changed' with
    `repair`, which would drop its episodes. Until 2026-12-07 it said 'truncated or changed' and pointed at repair,
    and merge called the file corrupt."""
    rel, manifest = first_shard(small_dataset)
    path = small_dataset / rel
    pq.write_table(pq.read_table(path), path, compression="snappy", row_group_size=8)
    import pyarrow.fs as pafs

    checksum, size = file_checksum(pafs.LocalFileSystem(), str(path))
    code, lines = run_validate(small_dataset, capsys)
    text = "\n".join(lines)
    assert code == 1 and lines[-1].startswith("1 problem(s)"), lines
    assert f"{rel}: size is {size} bytes, dataset.json says {manifest['shards'][0]['size_bytes']}, yet all its {manifest['shards'][0]['num_rows']} rows" in text
    assert f'set this shard\'s "size_bytes": {size} and "checksum": "{checksum}" in dataset.json' in text, lines
    assert main(["dataset", "merge", str(small_dataset), "--out", str(tmp_path / "m")]) == 2
    assert "corrupt, or changed since it was committed" in capsys.readouterr().err

    manifest["shards"][0].update(size_bytes=size, checksum=checksum)
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    assert run_validate(small_dataset, capsys)[0] == 0
    assert main(["dataset", "merge", str(small_dataset), "--out", str(tmp_path / "m")]) == 0


def test_validate_says_a_shared_fix_once_and_lists_the_shards(small_dataset, capsys):
    _, manifest = first_shard(small_dataset)
    strays = [f"frames/part-stray-{i:05d}.parquet" for i in range(3)]
    for rel in strays:
        shutil.copy(small_dataset / manifest["shards"][0]["path"], small_dataset / rel)
    code, lines = run_validate(small_dataset, capsys)
    text = "\n".join(lines)
    assert code == 1 and lines[-1].startswith("3 problem(s)"), lines
    assert text.count("extra shard") == 1 and text.count("re-run the same command") == 1, lines
    assert all(line.count("part-stray-") in (0, 3) for line in lines), lines  # every shard named where it is said


def test_wrong_frame_size_non_monotonic_and_duplicate_steps(small_dataset, capsys):
    def damage(cols):
        frames = cols["frame"].to_pylist()
        frames[5] = frames[5][:100]
        steps = cols["step"].to_numpy().copy()
        steps[10] = 12  # 9, 12, 11: a jump then a step back
        steps[20] = 19  # 19, 19: a duplicate
        return {**cols, "frame": pa.array(frames, pa.binary()), "step": pa.array(steps, pa.int32())}

    rel = rewrite_shard(small_dataset, damage)
    code, lines = run_validate(small_dataset, capsys)
    assert code == 1
    assert f"{small_dataset}/{rel} row 5: frame has 100 bytes, expected 3072" in "\n".join(lines)
    assert any(f"{rel} row 10: step 12 follows step 9" in line for line in lines), lines
    assert any(f"{rel} row 11: step 11 follows step 12" in line for line in lines), lines
    assert any(f"{rel} row 20: duplicate step 19" in line for line in lines), lines
    assert any(f"{rel} row 21: step 21 follows step 19" in line for line in lines), lines
    assert lines[-1].startswith("5 problem(s)")


def test_wrong_format_version_is_one_line_without_traceback(small_dataset, capsys):
    manifest = json.loads((small_dataset / "dataset.json").read_text())
    manifest["format_version"] = 4  # a later format than this WorldLoom reads
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    code, lines = run_validate(small_dataset, capsys)
    assert code == 1 and "format_version is 4" in lines[0]
    out = subprocess.run([sys.executable, "-m", "worldloom.pipeline.cli", "dataset", "inspect", str(small_dataset)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "dataset.json: format_version is 4" in line and "written by a newer WorldLoom: upgrade WorldLoom" in line


def test_inspect_json(small_dataset, capsys):
    assert main(["dataset", "inspect", "--json", str(small_dataset)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["episodes"], s["frames"], s["labeled_frames"]) == (4, 143, 93)
    assert s["hours"] == pytest.approx(143 / 20 / 3600)
    assert s["label_sources"] == {"env": {"episodes": 3, "frames": 93}, "none": {"episodes": 1, "frames": 50}}
    assert 0.1 < s["button_press_rate"]["attack"] < 0.35  # the fixture presses each button 20% of steps
    assert sum(s["camera_histogram"]["yaw"]) == 93
    assert main(["dataset", "inspect", str(small_dataset)]) == 0
    assert "143 frames" in capsys.readouterr().out
    # --episodes lists the ids other commands take (`pretrain rollout --episode`), one a line
    ids = sorted(Dataset(small_dataset).episode_ids)
    assert main(["dataset", "inspect", "--episodes", str(small_dataset)]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and
              line.split()[0] in ids]
    assert sorted(listed) == ids
    assert main(["dataset", "inspect", "--episodes", "--json", str(small_dataset)]) == 0
    rows = json.loads(capsys.readouterr().out)["episode_list"]
    assert sorted(r["episode_id"] for r in rows) == ids and sum(r["num_steps"] for r in rows) == 143


def test_inspect_of_a_capture_still_running_or_killed_says_so_instead_of_histograms(small_dataset, capsys):
    from worldloom.datasets.jobs import job_lock

    manifest = json.loads((small_dataset / "dataset.json").read_text())
    capture = {"out": str(small_dataset), "env": "voxel", "episodes": 6, "steps": 50, "seed": 0, "progress": True}
    manifest["config"] = {"capture": capture, "label_source": "env"}
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    assert main(["dataset", "inspect", str(small_dataset)]) == 1  # 4 of the job's 6 episodes: killed
    out = capsys.readouterr().out
    assert "incomplete" in out and "4 of 6 episodes committed" in out and "button press rate" not in out
    assert f"run: worldloom capture run --env voxel --episodes 6 --steps 50 --seed 0 --out {small_dataset}" in out
    # a trainer opening it goes on with what is there, and says so in one line (it trained on 1 of 30 episodes
    # without a word: a new-user trial, session 44)
    from worldloom.idm.data import open_datasets

    assert len(open_datasets([str(small_dataset)], same_frames=True)[0]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"note: {small_dataset} is incomplete, its job stopped before the end (4 of 6 episodes "
                          "committed); using those; to finish it first run: worldloom capture run --env voxel") and \
        err.count("\n") == 1, err
    with job_lock([str(small_dataset)], "capture run"):
        assert main(["dataset", "inspect", str(small_dataset)]) == 1
        open_datasets([str(small_dataset)], same_frames=True)
    out, err = capsys.readouterr()
    assert "in progress: a job is writing it now" in out and "button press rate" not in out
    assert f"note: {small_dataset} is being written by a job now (4 of 6 episodes committed)" in err
    manifest["config"]["capture"]["episodes"] = 4
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    assert main(["dataset", "inspect", str(small_dataset)]) == 0 and "button press rate" in capsys.readouterr().out
    open_datasets([str(small_dataset)], same_frames=True)
    assert capsys.readouterr().err == ""  # complete: nothing said


def test_export_into_the_dataset_itself_is_one_line(small_dataset, capsys):
    """`dataset export DS --out DS/sheet.png` wrote the sheet among the dataset's own files, exit 0 (a video
    there too). Now one line, and the dataset's folder is left as it was."""
    from conftest import tree_digest

    before = tree_digest(small_dataset)
    for out, episode in ((small_dataset / "sheet.png", []), (small_dataset / "frames" / "c.gif", ["--episode", "ep-1"])):
        assert main(["dataset", "export", str(small_dataset), *episode, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"lies inside the WorldLoom dataset {small_dataset}; write it to a folder outside it" in err, err
        assert err.count("\n") == 1
    assert tree_digest(small_dataset) == before


def test_export_video_gif_and_contact_sheet(small_dataset, tmp_path, capsys):
    gif, mp4, png = tmp_path / "c.gif", tmp_path / "c.mp4", tmp_path / "sheet.png"
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-1", "--start", "3", "--stop", "13", "--out", str(gif)]) == 0
    assert Image.open(gif).n_frames == 10
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-3", "--out", str(mp4)]) == 0
    assert mp4.stat().st_size > 1000
    assert main(["dataset", "export", str(small_dataset), "--out", str(png)]) == 0
    assert Image.open(png).size == (4 * 130, 130)  # 32x32 tiles x4: a longer side of 128 px, 1 px border
    assert main(["dataset", "export", str(small_dataset), "--episode", "nope", "--out", str(gif)]) == 2
    assert "episode 'nope' is not in" in capsys.readouterr().err


def test_export_past_an_episodes_end_says_what_it_cut(small_dataset, tmp_path, capsys):
    """`--start 10 --stop 64` on a 20-step episode wrote 10 frames and said `wrote c.gif`; a range past
    the end named a --stop the user never gave. Now one line says what was cut, before the video is made."""
    gif = tmp_path / "c.gif"
    capsys.readouterr()
    argv = ["dataset", "export", str(small_dataset), "--episode", "ep-2", "--out", str(gif)]
    assert main([*argv, "--start", "10", "--stop", "64"]) == 0
    assert Image.open(gif).n_frames == 10
    assert ("dataset export: episode 'ep-2' holds 20 steps: steps 10..19 exported (10 of the 54 that --start 10 "
            "--stop 64 asked)") in capsys.readouterr().err
    assert main([*argv, "--start", "10", "--stop", "20"]) == 0
    assert "holds 20 steps" not in capsys.readouterr().err  # nothing cut: nothing said
    assert main([*argv, "--start", "30", "--stop", "64"]) == 2
    err = capsys.readouterr().err
    assert "episode 'ep-2' has steps 0..19; --start 30 --stop 64 selects none" in err and err.count("\n") == 1, err


def test_a_contact_sheet_says_when_it_draws_fewer_frames_than_num_and_refuses_a_num_below_one(small_dataset, tmp_path,
                                                                                              capsys):
    """`--num 64` on a 20-step episode drew 20 tiles and said nothing; `--num -3` drew all episodes but the last
    three, `--num 0` said 'no frames to draw'."""
    png = tmp_path / "sheet.png"
    base = ["dataset", "export", str(small_dataset), "--out", str(png)]
    capsys.readouterr()
    assert main([*base, "--episode", "ep-2", "--num", "64"]) == 0
    assert Image.open(png).size == (8 * 130, 3 * 130)  # all 20 steps, 8 a row
    assert "dataset export: episode 'ep-2' holds 20 steps: the sheet draws all 20, not --num 64" in capsys.readouterr().err
    assert main([*base, "--num", "10"]) == 0
    assert "holds 4 episode(s): the sheet draws the middle frame of each, not --num 10" in capsys.readouterr().err
    assert main(base) == 0 and capsys.readouterr().err == ""  # the default is a cap: nothing said
    png.unlink()
    for num in ("0", "-3"):
        assert main([*base, "--num", num]) == 2
        err = capsys.readouterr().err
        assert f"--num {num}: a contact sheet draws 1 to 4096 frames" in err and err.count("\n") == 1, err
        assert not png.exists()


def test_export_into_a_folder_names_the_video_after_the_episode(small_dataset, tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-1", "--stop", "4", "--out", str(folder)]) == 0
    assert (folder / "ep-1.mp4").stat().st_size > 100 and f"wrote {folder / 'ep-1.mp4'}" in capsys.readouterr().out
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-1", "--out", str(tmp_path / "nope")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # no folder, no suffix: ambiguous
    assert "--out" in line and ".mp4 or .gif" in line and "unknown video type" not in line


def test_export_fits_the_frame_to_512_px_unless_scale_is_given(small_dataset, tmp_path):
    from worldloom.datasets import DatasetWriter
    from worldloom.datasets.export import BAR_PX

    gif = tmp_path / "c.gif"
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-1", "--stop", "2", "--out", str(gif)]) == 0
    assert Image.open(gif).size == (512, 512 + BAR_PX)  # 32x32 x16, pixel art kept sharp
    assert main(["dataset", "export", str(small_dataset), "--episode", "ep-1", "--stop", "2", "--scale", "3",
                 "--out", str(gif)]) == 0
    assert Image.open(gif).size == (96, 96 + BAR_PX)
    with DatasetWriter(tmp_path / "hd", 360, 640, fps=20) as w:  # footage larger than 512: downscaled, not x4
        w.add_episode("ep-0", np.zeros((2, 360, 640, 3), np.uint8), label_source="none")
    assert main(["dataset", "export", str(tmp_path / "hd"), "--episode", "ep-0", "--out", str(gif)]) == 0
    assert Image.open(gif).size == (512, 288 + BAR_PX)



def test_export_of_odd_sized_frames_to_mp4_says_it_crops(tmp_path, capsys):
    """`--scale 1 --no-overlay` (footage to re-ingest) wrote a 65x47 episode as a 64x46 mp4 without a word, so the
    re-ingested dataset would not merge with the original. Now a note names both sizes and what keeps every pixel."""
    from worldloom.datasets.video import read_video

    frames = np.random.default_rng(0).integers(0, 255, (3, 47, 65, 3), dtype=np.uint8)
    with DatasetWriter(tmp_path / "odd", 47, 65, fps=20) as w:
        w.add_episode("ep-0", frames, label_source="none")
    argv = ["dataset", "export", str(tmp_path / "odd"), "--episode", "ep-0", "--scale", "1", "--no-overlay"]
    assert main([*argv, "--out", str(tmp_path / "c.mp4")]) == 0
    assert "dataset export: note: 65x47 frames are written 64x46 (an mp4 of H.264 4:2:0 takes even sizes" in \
        capsys.readouterr().err
    assert read_video(tmp_path / "c.mp4")[0].shape[1:3] == (46, 64)
    assert main([*argv, "--out", str(tmp_path / "c.gif")]) == 0
    assert "note:" not in capsys.readouterr().err and Image.open(tmp_path / "c.gif").size == (65, 47)
    # a GIF shows 50 frames a second at most: a 60 fps episode's GIF leaves a third of its steps out, and said
    # nothing (a new-user trial, session 57)
    with DatasetWriter(tmp_path / "fast", 47, 65, fps=60) as w:
        w.add_episode("ep-0", np.concatenate([frames] * 40), label_source="none")
    assert main(["dataset", "export", str(tmp_path / "fast"), "--episode", "ep-0", "--out", str(tmp_path / "f.gif")]) == 0
    assert "a GIF shows 50 frames a second at most (browsers play a shorter delay slower), so 40 of the 120 steps at " \
        "60 fps are left out" in capsys.readouterr().err and Image.open(tmp_path / "f.gif").n_frames == 80


def test_export_bad_scale_or_episode_is_one_line_naming_some_ids(small_dataset, tmp_path, capsys):
    mp4, png = tmp_path / "c.mp4", tmp_path / "sheet.png"
    for args in (["--episode", "ep-1", "--scale", "0", "--out", str(mp4)], ["--episode", "ep-9", "--out", str(mp4)],
                 ["--episode", "ep-9", "--out", str(png)]):
        assert main(["dataset", "export", str(small_dataset), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and err.startswith("worldloom dataset: error:"), err
        assert ("--scale must be a whole number >= 1" in err if "0" in args else
                "episode 'ep-9' is not in" in err and "(it has 4 episodes, e.g. ep-0, ep-1, ep-2; `worldloom dataset inspect` lists them)" in err), err
    assert not mp4.exists() and not png.exists()


def test_merge_into_a_run_folder_is_refused(small_dataset, tmp_path, capsys):
    from worldloom.checkpoint import write_run_config

    run = tmp_path / "idm"
    run.mkdir()
    write_run_config(run, "idm", {})
    before = tree_digest(run)
    assert main(["dataset", "merge", str(small_dataset), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--out {run} holds an IDM run (config.json with \"kind\": \"idm\"), not a WorldLoom dataset" in err
    assert tree_digest(run) == before


def test_merge_and_split_copy_frames_bytes(small_dataset, tmp_path, capsys):
    other = tmp_path / "other"
    with DatasetWriter(other, 32, 32) as w:
        w.add_episode("x-0", pixel_frames(30, 32, 32, seed=5))
    merged = tmp_path / "merged"
    assert main(["dataset", "merge", str(small_dataset), str(other), "--out", str(merged)]) == 0
    ds = Dataset(merged)
    assert sorted(ds.episode_ids) == ["ep-0", "ep-1", "ep-2", "ep-3", "x-0"]
    np.testing.assert_array_equal(ds.frames("x-0").frames, pixel_frames(30, 32, 32, seed=5))
    assert validate(merged) == []
    # Merging again into the same output is refused: nothing is duplicated or overwritten.
    before = tree_digest(merged)
    assert main(["dataset", "merge", str(other), "--out", str(merged)]) == 2
    assert "already holds episode 'x-0'" in capsys.readouterr().err and tree_digest(merged) == before

    splits = tmp_path / "splits"
    assert main(["dataset", "split", str(merged), "--out", str(splits), "--fractions", "train=0.6", "val=0.4", "--seed", "1"]) == 0
    parts = {name: Dataset(splits / name) for name in ("train", "val")}
    ids = {name: set(d.episode_ids) for name, d in parts.items()}
    assert ids["train"] | ids["val"] == set(ds.episode_ids) and not ids["train"] & ids["val"]
    for name, d in parts.items():
        assert validate(splits / name) == []
        assert set(d.episodes.column("split").to_pylist()) <= {name}
        for eid in d.episode_ids:
            assert d.read_table(eid).column("frame").equals(ds.read_table(eid).column("frame"))
    again = tmp_path / "again"
    main(["dataset", "split", str(merged), "--out", str(again), "--fractions", "train=0.6", "val=0.4", "--seed", "1"])
    assert set(Dataset(again / "train").episode_ids) == ids["train"]  # deterministic


def test_a_split_on_an_object_store_names_its_datasets_by_uris_that_open(small_dataset, s3_bucket, capsys):
    """`dataset split "s3://b/merged?E" --out "s3://b/splits?E"` printed `s3://b/splits?E/train`: the
    split's name after the query, which opens no dataset when pasted (its errors named files the same
    way). A child of a URI goes into its path, before the `?query`."""
    merged, splits = s3_bucket.uri("merged"), s3_bucket.uri("splits")
    assert main(["dataset", "merge", str(small_dataset), "--out", merged]) == 0
    capsys.readouterr()
    split = ["dataset", "split", merged, "--out", splits, "--fractions", "train=0.5", "val=0.5"]
    assert main(split) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    named = [line.split(": ")[0] for line in lines]
    assert named == [s3_bucket.uri("splits/train"), s3_bucket.uri("splits/val")], lines
    assert sum(len(Dataset(uri)) for uri in named) == len(Dataset(merged)) == 4  # each pasted as printed opens
    assert {"splits/train/dataset.json", "splits/val/dataset.json"} <= s3_bucket.keys("splits/")
    # Another split into the same --out: the error names the split's dataset the same way.
    assert main([*split[:-2], "train=0.9", "val=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"worldloom dataset: error: {s3_bucket.uri('splits/train')}: holds another dataset"), err


def test_hints_on_an_object_store_name_the_uri_as_given_and_run_when_pasted(small_dataset, s3_bucket, capsys):
    """A capture into `s3://b/conc?endpoint_override=...` whose episodes.parquet was damaged said `run
    'worldloom dataset validate b/conc'`: the filesystem's bare path (the writer passed its path and
    filesystem on, not the URI), which opens no dataset. The hint names the URI as given (credentials
    redacted), quoted for the shell (its `&` would end the command), and runs when pasted."""
    import shlex

    from worldloom.datasets.writer import committed_episode_ids

    uri = s3_bucket.uri("conc")
    assert main(["dataset", "merge", str(small_dataset), "--out", uri]) == 0
    s3_bucket.put("conc/episodes.parquet", b"not parquet")  # as a torn upload by another tool leaves it
    capsys.readouterr()
    want = f"{s3_bucket.uri('conc/episodes.parquet')}: cannot read ("
    hint = f"run `worldloom dataset validate {shlex.quote(uri)}`"
    for attempt in (lambda: DatasetWriter(uri, 32, 32, writer_id="rec-1"),  # what each capture recorder opens
                    lambda: committed_episode_ids(uri)):
        with pytest.raises(UserError) as caught:
            attempt()
        assert str(caught.value).startswith(want) and str(caught.value).endswith(hint), str(caught.value)
    other = small_dataset.parent / "other"
    with DatasetWriter(other, 32, 32) as w:
        w.add_episode("x-0", pixel_frames(8, 32, 32))
    assert main(["dataset", "merge", str(other), "--out", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"worldloom dataset: error: {want}") and err.endswith(hint), err
    argv = shlex.split(hint.split("`")[1])  # the command as a shell reads it, pasted
    assert argv[0] == "worldloom" and main(argv[1:]) == 1  # it runs: it finds the damaged file, not "no such dataset"
    shown = capsys.readouterr().err
    assert shown.startswith(s3_bucket.uri("conc/episodes.parquet")), shown  # a name that opens, pasted
    # With credentials in the URI, the hint names it with them redacted.
    secret = "uriSECRETworldloom30"
    with pytest.raises(UserError) as caught:
        committed_episode_ids(uri.replace("s3://", f"s3://AKIDWORLDLOOM30:{secret}@"))
    assert secret not in str(caught.value) and f"validate {shlex.quote(uri.replace('s3://', 's3://***@'))}`" in str(caught.value)


def test_an_interrupted_split_is_finished_by_the_same_command(small_dataset, tmp_path, capsys):
    from worldloom.datasets.edit import assign_split

    flags = ["--fractions", "train=0.5", "val=0.5", "--seed", "3"]
    fresh = tmp_path / "fresh"
    assert main(["dataset", "split", str(small_dataset), "--out", str(fresh), *flags]) == 0
    # What a split killed part-way leaves: one train episode committed, a shard never committed, no val yet.
    src, splits = Dataset(small_dataset), tmp_path / "splits"
    config = {"split_of": src.location.uri, "fractions": {"train": 0.5, "val": 0.5}, "seed": 3}
    first = next(r for r in src.episodes.to_pylist() if assign_split(r["episode_id"], config["fractions"], 3) == "train")
    with DatasetWriter(splits / "train", 32, 32, config=config, writer_id="split-dead00-train") as w:
        w.add_encoded_episode(src.read_table(first["episode_id"]), {**first, "split": "train"})
    orphan = splits / "train" / "frames" / "part-split-dead00-train-00009.parquet"
    orphan.write_bytes(b"left by a killed split")
    assert main(["dataset", "split", str(small_dataset), "--out", str(splits), *flags]) == 0
    for name in ("train", "val"):
        assert sorted(Dataset(splits / name).episode_ids) == sorted(Dataset(fresh / name).episode_ids)
        assert validate(splits / name) == []
    assert not orphan.exists()
    capsys.readouterr()
    assert main(["dataset", "split", str(small_dataset), "--out", str(splits), "--fractions", "train=0.5", "val=0.5"]) == 2
    assert "holds another dataset than this split" in capsys.readouterr().err  # another seed: not resumed into it


def test_a_split_run_again_copies_episodes_whose_source_changed_and_drops_gone_ones(tmp_path, capsys):
    """A source relabeled (an episode's content replaced under its id, as `idm label` does) or repaired
    (an episode dropped) since it was split: the same split command gives what a fresh split gives
    (it said 'N episodes' and kept the old labels, as they were 'already there' by id)."""
    from worldloom.datasets.writer import commit_shards

    src = tmp_path / "src"
    with DatasetWriter(src, 32, 32, shard_max_frames=1) as w:  # a shard per episode, as idm label writes
        for i in range(6):
            w.add_episode(f"ep-{i}", pixel_frames(12, 32, 32, seed=i), buttons=np.zeros((12, 20), bool),
                          camera=np.full((12, 2), i, np.float32), label_source="env")
    flags = ["--fractions", "train=0.5", "val=0.5", "--seed", "1", "--out"]
    splits = tmp_path / "splits"
    assert main(["dataset", "split", str(src), *flags, str(splits)]) == 0
    relabeled = Dataset(splits / "train").episode_ids[0]
    gone = sorted(Dataset(splits / "train").episode_ids + Dataset(splits / "val").episode_ids)[-1]
    if gone == relabeled:
        gone = Dataset(splits / "val").episode_ids[0]
    with DatasetWriter(src, 32, 32, autocommit=False) as w:
        w.release_ids([relabeled])
        w.add_episode(relabeled, pixel_frames(12, 32, 32, seed=9), buttons=np.zeros((12, 20), bool),
                      camera=np.full((12, 2), 9, np.float32), label_source="env")
    commit_shards(src, w.shards, replace=[relabeled])
    commit_shards(src, [], replace=[gone])  # as `dataset repair` drops an episode
    capsys.readouterr()
    assert main(["dataset", "split", str(src), *flags, str(splits)]) == 0
    err = capsys.readouterr().err
    assert f"1 episode(s) changed in {src} since they were split (e.g. {relabeled!r}): copied again" in err, err
    assert f"1 no longer in {src} (e.g. {gone!r}): dropped" in err and len(err.splitlines()) <= 2, err
    assert main(["dataset", "split", str(src), *flags, str(tmp_path / "fresh")]) == 0
    source = Dataset(src)
    for name in ("train", "val"):
        again, fresh = Dataset(splits / name), Dataset(tmp_path / "fresh" / name)
        assert sorted(again.episode_ids) == sorted(fresh.episode_ids) and validate(splits / name) == []
        for eid in again.episode_ids:
            np.testing.assert_array_equal(again.frames(eid).camera, source.frames(eid).camera)
            np.testing.assert_array_equal(again.frames(eid).frames, source.frames(eid).frames)
    capsys.readouterr()
    assert main(["dataset", "split", str(src), *flags, str(splits)]) == 0
    assert "copied again" not in capsys.readouterr().err  # nothing changed: nothing copied


def test_a_merge_sweeps_what_a_killed_merge_left(small_dataset, tmp_path):
    merged = tmp_path / "merged"
    assert main(["dataset", "merge", str(small_dataset), "--out", str(merged)]) == 0
    orphans = [merged / "frames" / ".part-merge-dead00-00000.parquet.0badf00d.tmp",
               merged / "frames" / "part-merge-dead00-00000.parquet"]  # a merge killed mid-copy
    for path in orphans:
        path.write_bytes(b"left by a killed merge")
    other = tmp_path / "other"
    with DatasetWriter(other, 32, 32) as w:
        w.add_episode("x-0", pixel_frames(4, 32, 32, seed=5))
    assert main(["dataset", "merge", str(other), "--out", str(merged)]) == 0
    assert not any(p.exists() for p in orphans) and validate(merged) == []


def test_merge_refuses_schema_and_spec_mismatch(small_dataset, tmp_path, capsys):
    bigger = tmp_path / "bigger"
    with DatasetWriter(bigger, 64, 64) as w:
        w.add_episode("b-0", pixel_frames(4, 64, 64))
    out = tmp_path / "out"
    assert main(["dataset", "merge", str(small_dataset), str(bigger), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "height is 64" in err and len(err.splitlines()) == 1 and not out.exists()
    assert "`worldloom capture run ... --resolution 32`" in err  # the flag that records it at the size of the first

    odd = tmp_path / "odd"
    with DatasetWriter(odd, 32, 32) as w:
        w.add_episode("o-0", pixel_frames(4, 32, 32))
    rel, _ = first_shard(odd)
    pq.write_table(pq.read_table(odd / rel).drop_columns(["reward"]), odd / rel)
    assert main(["dataset", "merge", str(small_dataset), str(odd), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{rel}: schema mismatch: column 'reward' is missing" in err and not out.exists()


def test_validate_decodes_h264_chunks(tmp_path, capsys):
    root = tmp_path / "h"
    with DatasetWriter(root, 32, 32, codec="h264") as w:
        w.add_episode("e", pixel_frames(40, 32, 32))
    assert validate(root) == []

    def damage(cols):
        cells = cols["frame"].to_pylist()
        cells[32] = cells[32][:40]  # the second chunk's stream, cut short
        return {**cols, "frame": pa.array(cells, pa.binary())}

    rel = rewrite_shard(root, damage)
    code, lines = run_validate(root, capsys)
    assert code == 1 and any(f"{rel} row 32: H.264 chunk" in line for line in lines), lines
    assert lines[-1].startswith("1 problem(s)")  # chunks spanning row groups are fine


def test_export_refuses_a_scale_whose_frames_pass_4096_px_before_drawing(small_dataset, tmp_path, capsys):
    mp4, png = tmp_path / "c.mp4", tmp_path / "sheet.png"
    # 32x32 frames: x128 is 4096 px (allowed), x1000 32000x32000 px (~3 GB a frame); a sheet of
    # 8 tiles across with 2 px borders: x15
    for out, scale, fits in ((mp4, "1000", "--scale 128 or less"), (png, "1000", "--scale 15 or less")):
        assert main(["dataset", "export", str(small_dataset), "--episode", "ep-1", "--scale", scale,
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        assert "--scale 1000 makes" in err and "32x32 frames" in err and "4096 px a side" in err and fits in err, err
        assert not out.exists()
    from worldloom.datasets.export import check_output_size

    check_output_size(128, 32, 32)  # the boundary: 4096 px passes, 4128 does not
    check_output_size(15, 32, 32, rows=4, cols=8, border=2)
    with pytest.raises(UserError, match="use --scale 128 or less"):
        check_output_size(129, 32, 32)


def test_repair_of_a_file_or_a_missing_folder_is_one_line_and_makes_nothing(tmp_path, capsys):
    """`dataset repair notes.txt` was a FileExistsError traceback; `dataset repair typo` made the folder
    `typo/` with a lock file in it before saying there was no dataset there."""
    note = tmp_path / "notes.txt"
    note.write_text("not a dataset")
    for path in (note, tmp_path / "typo"):
        assert main(["dataset", "repair", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{path}: no dataset.json here" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and note.read_text() == "not a dataset"


def test_split_refuses_a_bad_out_or_fractions_in_one_line_writing_nothing(small_dataset, tmp_path, capsys):
    """`split --out notes.txt` was a NotADirectoryError traceback; `--out` a dataset or an IDM run got
    train/ and val/ datasets nested inside it (exit 0); `--fractions train=nan` put every episode in
    train; `--fractions a/b=0.5 c=0.5` said "writer_id may hold letters..." after making sp/a/b."""
    from worldloom.checkpoint import write_run_config

    note = tmp_path / "notes.txt"
    note.write_text("not a folder")
    run = tmp_path / "idm"
    run.mkdir()
    write_run_config(run, "idm", {})
    other = tmp_path / "other"
    with DatasetWriter(other, 32, 32) as w:
        w.add_episode("x-0", pixel_frames(8, 32, 32))
    before = {p: tree_digest(p) for p in (small_dataset, run, other)}
    cases = [(note, ["train=0.9", "val=0.1"], "is a file"), (run, ["train=0.9", "val=0.1"], "holds an IDM run"),
             (other, ["train=0.9", "val=0.1"], "holds a WorldLoom dataset"),
             (tmp_path / "sp", ["train=nan"], "name=fraction pairs"), (tmp_path / "sp", ["a/b=0.5", "c=0.5"], "'a/b'"),
             (tmp_path / "sp", ["..=1"], "'..'"), (tmp_path / "sp", ["train=1", "train=0"], "'train' twice")]
    for out, fractions, words in cases:
        assert main(["dataset", "split", str(small_dataset), "--out", str(out), "--fractions", *fractions]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err and "Traceback" not in err, err
    assert {p: tree_digest(p) for p in before} == before and note.read_text() == "not a folder"
    assert not (tmp_path / "sp").exists()


def test_merge_or_split_of_empty_datasets_is_one_line_not_exit_0(small_dataset, tmp_path, capsys):
    """`dataset merge EMPTY --out m` made an empty dataset and `dataset split EMPTY --out sp` two empty ones,
    exit 0, as if something were merged or split. Now one line, exit 2, nothing made; an empty source
    beside one with episodes still merges."""
    empty = tmp_path / "empty"
    DatasetWriter(empty, 32, 32).close()
    for argv, words in ((["merge", str(empty), str(empty), "--out", str(tmp_path / "m")], "no episodes in any source"),
                        (["split", str(empty), "--out", str(tmp_path / "sp")], "the dataset holds no episodes")):
        assert main(["dataset", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "m").exists() and not (tmp_path / "sp").exists()
    assert main(["dataset", "merge", str(empty), str(small_dataset), "--out", str(tmp_path / "m")]) == 0
    assert len(Dataset(tmp_path / "m")) == 4


def test_repair_says_how_to_get_the_episodes_back_for_what_made_the_dataset(small_dataset, tmp_path, capsys):
    """`dataset repair` of a merged dataset said "re-run the capture command that made them", and re-running
    the merge into it is refused ("already holds episode"): now it names the merge's sources and a new --out;
    a split says to re-run the split, which copies them again."""
    merged, splits = tmp_path / "merged", tmp_path / "splits"
    assert main(["dataset", "merge", str(small_dataset), "--out", str(merged)]) == 0
    assert main(["dataset", "split", str(small_dataset), "--out", str(splits), "--fractions", "train=1"]) == 0
    for root, words in ((merged, f"merge its sources ({small_dataset}) again into a new --out to get them back"),
                        (splits / "train", "re-run the `worldloom dataset split` command that made it to copy them again")):
        (root / first_shard(root)[0]).unlink()
        code, lines = run_validate(root, capsys)  # it points to repair, not to a capture that never made this data
        text = "\n".join(lines)
        assert code == 1 and "run `worldloom dataset repair` (it says which command" in text and "capture" not in text, lines
        assert main(["dataset", "repair", str(root)]) == 0
        assert words in capsys.readouterr().out
    assert main(["dataset", "split", str(small_dataset), "--out", str(splits), "--fractions", "train=1"]) == 0
    assert len(Dataset(splits / "train")) == 4 and validate(splits / "train") == []


def test_export_of_an_episode_of_an_empty_dataset_says_it_is_empty(tmp_path, capsys):
    """`dataset export EMPTY --episode ep-0` said "(it has 0 episodes, e.g. [])"; now it says the dataset is empty."""
    DatasetWriter(tmp_path / "empty", 32, 32).close()
    assert main(["dataset", "export", str(tmp_path / "empty"), "--episode", "ep-0", "--out", str(tmp_path / "e.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"worldloom dataset: error: episode 'ep-0' is not in {tmp_path / 'empty'}: the dataset holds no episodes"


def test_merge_of_one_dataset_twice_or_into_a_dataset_folder_is_one_line(small_dataset, tmp_path, capsys):
    """`dataset merge DS DS` said "episode ids must be unique across merged datasets (split one off or
    re-capture with other ids)"; `merge DS --out DS/frames` made a dataset inside DS's frames/ (validate then
    listed its files as extra shards, and a re-run writer's sweep deletes them). Now one line each."""
    before = tree_digest(small_dataset)
    for argv, words in (([str(small_dataset), f"{small_dataset}/", "--out", str(tmp_path / "m")],
                         f"{small_dataset}/ is given twice (also as {small_dataset})"),
                        ([str(small_dataset), "--out", str(small_dataset / "frames")],
                         f"lies inside the WorldLoom dataset {small_dataset}; give a new folder outside it")):
        assert main(["dataset", "merge", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert tree_digest(small_dataset) == before and not (tmp_path / "m").exists()


def test_an_object_store_out_of_reach_is_one_line(tmp_path, capsys):
    """`dataset inspect|validate|repair|export|merge s3://...` of an endpoint nothing listens on was a pyarrow
    OSError traceback (AWS Error NETWORK_CONNECTION); now one line naming the URI and what to check."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: bound, never listened
        s.bind(("127.0.0.1", 0))
        uri = f"s3://bucket/data?endpoint_override=127.0.0.1:{s.getsockname()[1]}&scheme=http"
        # (each call takes the S3 client's retries, about 10 s: one reader here; they all read the manifest first)
        assert main(["dataset", "export", uri, "--episode", "ep-0", "--out", str(tmp_path / "e.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{uri}: cannot read its dataset.json (" in err, err
        assert err.endswith("check the URI's address (endpoint_override) and credentials"), err
    assert not (tmp_path / "e.mp4").exists()


def test_a_split_that_draws_no_episode_says_so_and_names_a_seed_that_fills_every_split(tmp_path, capsys):
    """2 episodes at train=0.5 val=0.5 could both go to val without a word. Each episode keeps its own hash draw
    (adding episodes never moves the others); the line names the empty split and a --seed that fills both."""
    from conftest import pixel_frames

    from worldloom.datasets.edit import assign_split

    ids = ["run-a", "run-b"]
    fractions = {"train": 0.5, "val": 0.5}
    seed = next(s for s in range(100) if len({assign_split(e, fractions, s) for e in ids}) == 1)  # both in one split
    with DatasetWriter(tmp_path / "two", 32, 32) as w:
        for k, eid in enumerate(ids):
            w.add_episode(eid, pixel_frames(6, 32, 32, seed=k))
    flags = ["--fractions", "train=0.5", "val=0.5"]
    assert main(["dataset", "split", str(tmp_path / "two"), "--out", str(tmp_path / "s"), *flags, "--seed", str(seed)]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "warning" in x]
    empty = "train" if assign_split(ids[0], fractions, seed) == "val" else "val"
    assert line.startswith(f"dataset split: warning: {empty} drew none of the 2 episodes (--seed {seed})"), line
    suggested = int(re.search(r"--seed (\d+) fills every split", line).group(1))
    assert main(["dataset", "split", str(tmp_path / "two"), "--out", str(tmp_path / "t"), *flags, "--seed", str(suggested)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert [len(Dataset(tmp_path / "t" / n).episode_ids) for n in ("train", "val")] == [1, 1]


def test_a_split_and_its_source_given_together_are_one_copy_of_the_data(small_dataset, tmp_path):
    """`dataset split` records where each episode came from in its env_config (`split_source`), and the
    copy check compared env_config whole: a split's datasets given with their source (`idm train --data
    labeled splits/train`, `pretrain train`) were taken as other play and each episode counted twice
    (until 2026-12-08). Now the record of where a copy came from is no part of what the play was."""
    from worldloom.datasets.reader import check_distinct
    from worldloom.idm.data import open_datasets

    assert main(["dataset", "split", str(small_dataset), "--out", str(tmp_path / "s"), "--fractions", "a=0.5",
                 "b=0.5"]) == 0
    for name in ("a", "b"):
        if not len(Dataset(tmp_path / "s" / name)):
            continue
        with pytest.raises(UserError, match="a copy of the same data"):
            check_distinct([Dataset(small_dataset), Dataset(tmp_path / "s" / name)])
        with pytest.raises(UserError, match="a copy of the same data"):
            open_datasets([str(tmp_path / "s" / name), str(small_dataset)], same_frames=True)
    check_distinct([Dataset(tmp_path / "s" / "a"), Dataset(tmp_path / "s" / "b")])  # the two halves: no episode twice


def test_an_unwritable_out_is_one_line_for_every_dataset_job(small_dataset, full_disk, capsys):
    """`dataset ingest|merge|split` to an --out on a read-only disk ended in a traceback: the job lock's
    folder could not be made, and its clean-up then listed the folder that was never made
    (FileNotFoundError, until 2026-12-08). Now one line naming the folder, exit 2, nothing written."""
    from videos import write_video

    write_video(small_dataset.parent / "clip.mp4", num_frames=10)
    ro = full_disk("1m", read_only=True)
    jobs = {"ingest": ["dataset", "ingest", "--format", "video", "--data", str(small_dataset.parent / "clip.mp4"),
                       "--out", str(ro / "i")],
            "merge": ["dataset", "merge", str(small_dataset), "--out", str(ro / "m")],
            "split": ["dataset", "split", str(small_dataset), "--out", str(ro / "s")]}
    for name, argv in jobs.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(ro) in err and "read-only" in err.lower(), err
    assert list(ro.iterdir()) == []


def test_a_full_disk_stops_an_ingest_instead_of_skipping_every_input(tmp_path, full_disk, capsys):
    """With --out on a full disk, `dataset ingest` decoded every input and skipped each as if it were bad
    ('skipped: a.mp4: OSError: [Errno 28] ... No space left on device', for all of them, until 2026-12-08).
    The disk is no input's fault: the job stops at the first write that fails, in the line every command
    gives for a full disk, and the same command resumes once there is space."""
    from videos import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        write_video(videos / f"v{i}.mp4", num_frames=30 + i)  # 30 raw 64x64 steps: 0.37 MB, more than the disk
    small = full_disk("100k")
    argv = ["dataset", "ingest", "--format", "video", "--data", str(videos), "--out", str(small / "d")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "%|" not in line]
    assert "skipped" not in err and lines[-1].startswith("worldloom dataset: error: no space left on the device"), err
    assert lines[-1].endswith("re-run the same command to resume"), err


def test_a_file_written_to_a_read_only_disk_is_one_line(small_dataset, full_disk, capsys):
    """`dataset captions --out`, `capture branches --out` (any command's file) to a read-only disk ended in a
    traceback: the write failed, then the clean-up of the temporary file that was never made failed too,
    masking it (until 2026-12-08). Now one line naming the file, exit 2, for every command."""
    ro = full_disk("1m", read_only=True)
    for argv in (["envs", "show", "--env", "voxel", "--seeds", "0-1", "--out", str(ro / "w.png")],
                 ["capture", "branches", "--episodes", "1", "--context", "2", "--horizon", "2", "--resolution", "64",
                  "--out", str(ro / "b.safetensors")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "read-only" in err, err
        assert f"cannot write {ro / argv[-1].split('/')[-1]}: " in err, err  # the file asked for, not its temporary
