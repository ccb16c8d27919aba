"""Other tools read our Parquet with no WorldLoom code; our `datasets/` never shadows Hugging Face's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.fs as pafs
import pytest

from worldloom.datasets import schema

NON_FRAME_COLUMNS = [n for n in schema.FRAME_SCHEMA.names if n != "frame"]


def test_pandas_duckdb_polars_read_every_non_frame_column(small_dataset):
    import duckdb
    import pandas as pd
    import polars as pl

    episodes = pd.read_parquet(small_dataset / "episodes.parquet")
    assert list(episodes["episode_id"]) == ["ep-0", "ep-1", "ep-2", "ep-3"]
    assert list(episodes["num_steps"]) == [40, 33, 20, 50]
    assert list(episodes["label_source"]) == ["env", "env", "env", "none"]

    shards = sorted(str(p) for p in (small_dataset / "frames").glob("*.parquet"))
    frames = pd.concat([pd.read_parquet(p, columns=NON_FRAME_COLUMNS) for p in shards])
    assert list(frames.columns) == NON_FRAME_COLUMNS and len(frames) == 143
    ep1 = frames[frames["episode_id"] == "ep-1"]
    assert list(ep1["step"]) == list(range(33))
    assert ep1["action_camera_yaw"].dtype == np.float32
    assert set(ep1["action_attack"]) == {True, False}  # object dtype where a shard holds nulls (unlabeled)

    glob = str(small_dataset / "frames" / "*.parquet")
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT episode_id, count(*), max(step), sum(reward), count(action_attack) FROM read_parquet('{glob}') "
        "GROUP BY episode_id ORDER BY episode_id"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("ep-0", 40, 39, 40), ("ep-1", 33, 32, 33), ("ep-2", 20, 19, 20), ("ep-3", 50, 49, 0)]
    assert rows[0][3] == sum(range(40))
    joined = con.execute(
        f"SELECT e.player, count(*) FROM read_parquet('{glob}') f JOIN read_parquet('{small_dataset / 'episodes.parquet'}') e "
        "USING (episode_id) WHERE f.label_source = 'env' GROUP BY e.player"
    ).fetchall()
    assert joined == [("random", 93)]

    lazy = pl.scan_parquet(glob).select(NON_FRAME_COLUMNS)
    table = lazy.filter(pl.col("label_source") == "none").collect()
    assert table.height == 50 and table["action_forward"].null_count() == 50
    assert pl.read_parquet(small_dataset / "episodes.parquet")["split"].to_list() == ["train", "train", "train", "val"]


HF_SCRIPT = textwrap.dedent("""
    import json, sys
    import datasets
    root = sys.argv[1]
    eps = datasets.load_dataset("parquet", data_files={"train": root + "/episodes.parquet"}, split="train",
                                cache_dir=sys.argv[2])
    frames = datasets.load_dataset("parquet", data_files={"train": root + "/frames/*.parquet"}, split="train",
                                   columns=json.loads(sys.argv[3]), cache_dir=sys.argv[2])
    print(json.dumps({"module": datasets.__file__, "episodes": list(eps["episode_id"]), "num_rows": frames.num_rows,
                      "columns": frames.column_names, "first": {k: v for k, v in frames[0].items()}}))
""")


def test_hugging_face_datasets_reads_episodes_and_frames(small_dataset, tmp_path):
    # A subprocess in a temp dir: run from the repo root, `import datasets` would find our folder.
    out = subprocess.run(
        [sys.executable, "-c", HF_SCRIPT, str(small_dataset), str(tmp_path / "hf-cache"), json.dumps(NON_FRAME_COLUMNS)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"HF_DATASETS_OFFLINE": "1", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "site-packages" in got["module"]
    assert got["episodes"] == ["ep-0", "ep-1", "ep-2", "ep-3"]
    assert got["num_rows"] == 143 and got["columns"] == NON_FRAME_COLUMNS
    assert got["first"]["step"] == 0 and isinstance(got["first"]["action_camera_pitch"], float)


SHADOW_SCRIPT = textwrap.dedent("""
    import importlib.util, json, site, sys, sysconfig
    import datasets, worldloom.datasets
    purelib = sysconfig.get_paths()["purelib"]
    found = {name: (importlib.util.find_spec(name) or None) and importlib.util.find_spec(name).origin
             for name in ("envs", "capture", "idm", "pretrain")}
    print(json.dumps({"hf": datasets.__file__, "hf_has_load": hasattr(datasets, "load_dataset"),
                      "ours": worldloom.datasets.__file__, "purelib": purelib, "others": found}))
""")


def test_hugging_face_datasets_is_not_shadowed(tmp_path):
    out = subprocess.run([sys.executable, "-c", SHADOW_SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["hf"].startswith(got["purelib"]) and got["hf_has_load"], got
    assert not got["ours"].startswith(got["purelib"]) or "worldloom" in got["ours"], got
    assert got["ours"].replace("\\", "/").endswith("datasets/__init__.py")
    assert got["others"] == {"envs": None, "capture": None, "idm": None, "pretrain": None}, got
    import pathlib
    import sysconfig

    site_packages = pathlib.Path(sysconfig.get_paths()["purelib"])
    for name in ("envs", "capture", "idm", "pretrain"):
        assert not (site_packages / name).exists() and not (site_packages / f"{name}.py").exists()
    # The one `datasets` in site-packages is Hugging Face's (it has their arrow_dataset module).
    assert (site_packages / "datasets" / "arrow_dataset.py").exists()


def _rewrite(path, tool: str) -> None:
    """Read a Parquet file with `tool` and write it back over itself, as a researcher would."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.parquet as pq

    if tool == "pandas":  # dictionaries as int8 categories, strings as large_string, all-null columns as null
        pd.read_parquet(path).to_parquet(path)
    elif tool == "polars":  # dictionaries with uint32 indices, large_binary frames, large lists
        pl.read_parquet(path).write_parquet(path)
    elif tool == "duckdb":  # no pyarrow schema note: episode_id and label_source read back as plain strings
        duckdb.sql(f"COPY (SELECT * FROM read_parquet('{path}')) TO '{path}.new' (FORMAT parquet)")
        (path.parent / (path.name + ".new")).replace(path)
    else:  # pyarrow without its schema note, other compression and row groups (as Spark or Arrow C++ writers)
        pq.write_table(pq.read_table(path), path, store_schema=False, compression="snappy", row_group_size=7)


@pytest.mark.parametrize("tool", ["pandas", "polars", "duckdb", "pyarrow-plain"])
def test_shards_and_episodes_rewritten_by_another_tool_read_as_before(small_dataset, tool):
    """A shard or episodes.parquet read and written back by pandas, Polars or DuckDB holds the same values in
    other Arrow layouts (large_string, string_view, dictionaries of other index types or none, large_binary,
    null-typed all-null columns, int64 counts): they read with the documented types. Until 2026-12-07 each was
    refused as a 'schema mismatch' ('column episode_id is string, expected dictionary<...>'), so a dataset
    written from scratch by any tool but pyarrow could never be read."""
    from worldloom.datasets import Dataset
    from worldloom.datasets.validate import validate
    from worldloom.datasets.writer import file_checksum

    before = Dataset(small_dataset)
    expected = {e: before.frames(e) for e in before.episode_ids}
    rows = {e: before.read_table(e).drop_columns(["frame"]).to_pylist() for e in before.episode_ids}
    manifest = json.loads((small_dataset / "dataset.json").read_text())
    for entry in manifest["shards"]:  # the checksums are recorded again: this test is about the columns
        path = small_dataset / entry["path"]
        _rewrite(path, tool)
        entry["checksum"], entry["size_bytes"] = file_checksum(pafs.LocalFileSystem(), str(path))
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    _rewrite(small_dataset / "episodes.parquet", tool)

    assert [str(p) for p in validate(small_dataset)] == []
    after = Dataset(small_dataset)
    assert after.episode_ids == before.episode_ids
    for eid, clip in expected.items():
        got = after.frames(eid)
        np.testing.assert_array_equal(got.frames, clip.frames)
        if clip.buttons is not None:
            np.testing.assert_array_equal(got.buttons, clip.buttons)
            np.testing.assert_array_equal(got.camera, clip.camera)
        table = after.read_table(eid)
        assert table.schema == schema.FRAME_SCHEMA
        assert table.drop_columns(["frame"]).to_pylist() == rows[eid]


def test_a_value_that_does_not_fit_its_documented_type_is_named(small_dataset):
    """A column written wider than documented reads when its values fit; one that does not is one line naming
    the shard, the column and the value (not a cast error from deep in pyarrow, nor 'schema mismatch')."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from worldloom.datasets.validate import validate
    from worldloom.datasets.writer import file_checksum

    manifest = json.loads((small_dataset / "dataset.json").read_text())
    entry = manifest["shards"][0]
    path = small_dataset / entry["path"]
    table = pq.read_table(path)
    i = table.column_names.index("state_hotbar_slot")
    pq.write_table(table.set_column(i, "state_hotbar_slot", pa.array([300] * table.num_rows, pa.int64())), path)
    entry["checksum"], entry["size_bytes"] = file_checksum(pafs.LocalFileSystem(), str(path))
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    assert [str(p) for p in validate(small_dataset)] == [
        f"{entry['path']} row 0: column 'state_hotbar_slot' is int64 and does not cast to int8 (Integer value 300 not "
        "in range: -128 to 127); write it as int8"]


def test_a_column_added_by_another_tool_is_named_with_what_to_do(small_dataset):
    """A column a researcher added to a shard (pyarrow append_column) is outside the format: the reader and validate
    name the shard and the column and say how to keep the added data (until 2026-12-07: only 'not part of format
    version 3', and validate's 'schema mismatch' with no way out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from worldloom.datasets import Dataset
    from worldloom.datasets.validate import validate
    from worldloom.datasets.writer import file_checksum
    from worldloom.errors import UserError

    manifest = json.loads((small_dataset / "dataset.json").read_text())
    entry = manifest["shards"][0]
    path = small_dataset / entry["path"]
    table = pq.read_table(path)
    pq.write_table(table.append_column("my_score", pa.array(np.ones(table.num_rows))), path)
    entry["checksum"], entry["size_bytes"] = file_checksum(pafs.LocalFileSystem(), str(path))
    (small_dataset / "dataset.json").write_text(json.dumps(manifest))
    said = ("column 'my_score' is not part of format version 3 (added by another tool?); keep it in a file beside "
            "the dataset (joined on episode_id and step) and write the shard without it")
    assert [str(p) for p in validate(small_dataset)] == [f"{entry['path']}: schema mismatch: {said}"]
    with pytest.raises(UserError, match=re.escape(f"{entry['path']}: {said}; run `worldloom dataset validate")):
        Dataset(small_dataset).frames("ep-0")


def test_raw_frames_that_polars_wrote_as_large_binary_decode(small_dataset):
    """Polars writes `frame` as large_binary (64-bit offsets), and pyarrow or ray.data reading that shard hand the
    column over so (`to_ray_dataset` decodes batches as read): decode_frames read its offsets as 32-bit and called
    every frame '0 bytes, expected 3072' until 2026-12-07."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from worldloom.datasets import codecs

    path = sorted((small_dataset / "frames").glob("*.parquet"))[0]
    expected = codecs.decode_frames("raw", pq.read_table(path).column("frame"), 32, 32)
    pl.read_parquet(path).write_parquet(path)
    column = pq.read_table(path).column("frame")
    assert column.type == pa.large_binary()
    np.testing.assert_array_equal(codecs.decode_frames("raw", column, 32, 32), expected)
    np.testing.assert_array_equal(codecs.decode_frames("raw", column.cast(pa.binary_view()), 32, 32), expected)

