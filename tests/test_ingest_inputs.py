"""`worldloom dataset ingest` and `idm label` on inputs as real downloads and folders have them: text
files written by other tools, symlinked folders, names that differ in case, hand-written lists,
trajectories whose arrays disagree. Good-but-unusual input just works; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
from recordings import frame_number, vpt_lines, write_minerl, write_vpt

from worldloom.datasets import Dataset
from worldloom.datasets.ingest import IngestConfig, ingest
from worldloom.datasets.validate import validate


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
