"""The main job end to end through the real CLI: the `tiny` preset that `make demo` runs, its sizes
cut down by `--sizes.*` overrides (the same code path: its stage wiring, the `tiny` IDM and world
model, is what runs), its report opened in headless Chromium, and its stage cache (a second run redoes
nothing; --from redoes only from that stage on)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import dump_dom

pytestmark = pytest.mark.timeout(900)  # the whole loop runs in the first test's fixture

WORLDLOOM = str(Path(sys.executable).parent / "worldloom")  # the console command a user runs
# The demo's preset (`make demo`), its sizes cut down to CI's: episodes just longer than the tiny IDM's
# 16-frame window, seconds of training. (`small` here cost twice the time, its world model 20 s a step
# on CPU; every preset's stage configs are checked to agree in tests/test_cli.py.)
CUT_DOWN = {"steps": 24, "labeled-episodes": 4, "footage-episodes": 3, "heldout-episodes": 2, "judge-episodes": 3,
            "idm-minutes": 0.08, "judge-minutes": 0.03, "wm-minutes": 0.1, "eval-clips": 2, "eval-horizon": 1,
            "rollout-horizon": 1, "rollout-videos": 1, "idm-batch-size": 2, "wm-batch-size": 2,
            "engine-states": 1, "engine-horizon": 1, "revisit-states": 0}
CLI = [WORLDLOOM, "pipeline", "run", "--preset", "tiny", "--num-workers", "2",
       *[a for k, v in CUT_DOWN.items() for a in (f"--sizes.{k}", str(v))],
       "--sizes.engine-branches", "turn", "walk"]  # engine truth: 2 sequences from 1 state, 1 step


def _run(out, *extra):
    proc = subprocess.run([*CLI, "--out", str(out), *extra], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "demo"
    stdout = _run(out)
    return out, stdout


def _lookup(data, key):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def test_report_shows_every_stage_and_opens_in_a_browser(demo):
    out, stdout = demo
    assert f"report: {out / 'report.html'}" in stdout
    data = json.loads((out / "report.json").read_text())
    # the preset's models ran, at the pipeline's one resolution
    idm_cfg = json.loads((out / "idm" / "config.json").read_text())
    wm_cfg = json.loads((out / "world-model" / "config.json").read_text())
    assert idm_cfg["train"]["preset"] == "tiny" and (idm_cfg["model"]["height"], idm_cfg["model"]["width"]) == (64, 64)
    assert wm_cfg["train"]["preset"] == "tiny" and wm_cfg["model"]["image_size"] == 64
    assert data["preset"]["steps"] == CUT_DOWN["steps"]
    assert set(data["cost"]) >= {"capture", "idm", "idm_eval", "label", "pretrain", "pretrain_eval"}
    assert data["datasets"]["pseudo"]["label_sources"] == ["idm"]
    assert data["datasets"]["footage"]["label_sources"] == ["none"]
    assert data["idm"]["heldout"]["idm"]["num_steps"] > 0
    # the IDM's verdict pools every episode it never trained on, each margin with an interval over them
    unseen = data["idm"]["unseen"]
    assert unseen["datasets"] == {"heldout": data["datasets"]["heldout"]["episodes"],
                                  "footage": data["datasets"]["footage"]["episodes"]}
    pitch = unseen["vs_persistence"]["camera_r2_pitch"]
    assert pitch["episodes"] == sum(unseen["datasets"].values()) and (
        pitch["margin"] is None or pitch["ci95"][0] <= pitch["margin"] <= pitch["ci95"][1])
    assert "psnr" in data["world_model"]["next_frame"]
    # engine truth: a branches file from a saved held-out state, scored by the eval, shown with its picture
    cf = data["world_model"]["counterfactual"]
    assert cf["states"] == 1 and cf["horizon"] == CUT_DOWN["engine-horizon"] and cf["branches"] == ["turn", "walk"]
    assert cf["copy_last"]["controllability"] == [0.5] and cf["engine"]["controllability"] == [1.0]
    assert (out / "data" / "engine-branches.safetensors").exists() and (out / "world-model" / "eval" / "counterfactual.png").exists()
    assert "revisit" not in data["world_model"]  # revisit-states 0: no revisits file, none scored
    # captions beside the held-out clips they describe, each caption's text in the page
    assert 1 <= len(data["captions"]) <= 6 and all(c["caption"] and c["stop"] > c["start"] for c in data["captions"])
    md = (out / "report.md").read_text()
    assert "## Engine truth" in md and "Engine truth: at horizon 1" in md and "## Captions" in md
    assert f"Judged on the {pitch['episodes']} episodes the IDM never trained on" in md
    assert all(c["caption"] in md for c in data["captions"])

    dom = dump_dom(out / "report.html", budget_ms=10000)
    check = dict(re.findall(r'data-([a-z-]+)="(\d+)"', re.search(r'<p id="media-check"([^>]*)>', dom).group(1)))
    assert int(check["images"]) >= 8, check  # frame grids, curves, confusion, rollouts, engine grid, captions
    assert check["bad-images"] == "0" and check["bad-videos"] == "0", check
    cells = re.findall(r'<td data-key="([^"]+)">([^<]*)</td>', dom)
    assert len(cells) >= 20
    for key, shown in cells:
        value = _lookup(data, key)
        # nan where a score is undefined (R² over 2 clips without variance): shown as nan too
        assert float(shown.replace(",", "")) == pytest.approx(value, rel=1e-3, abs=1e-3, nan_ok=True), key
    assert "https://" not in (out / "report.html").read_text()


def test_second_run_reuses_every_stage_and_from_redoes_the_rest(demo):
    out, _ = demo
    before = json.loads((out / "pipeline.json").read_text())["stages"]
    stdout = _run(out, "--from", "report")
    for stage in ("capture", "idm", "idm_eval", "label", "pretrain", "pretrain_eval"):
        assert f"{stage}: cached" in stdout
    assert "report: running" in stdout
    after = json.loads((out / "pipeline.json").read_text())["stages"]
    assert {k: v for k, v in after.items() if k != "report"} == {k: v for k, v in before.items() if k != "report"}
    # a run copied (or moved) elsewhere keeps its stages: their keys hold paths relative to the run
    import shutil

    moved = out.parent / "moved"
    shutil.copytree(out, moved, symlinks=True)
    stdout = _run(moved)
    for stage in ("capture", "idm", "idm_eval", "label", "pretrain", "pretrain_eval"):
        assert f"{stage}: cached" in stdout, stdout
    assert "removed" not in stdout and (moved / "world-model" / "checkpoint").is_dir()


def test_a_record_under_the_older_absolute_key_is_the_same_stage(tmp_path):
    """Runs written before keys were `portable` keep their stages (not redone, nothing removed) and are rewritten
    with the new keys."""
    from worldloom.pipeline.stages import StageRunner, portable, stage_key

    config = {"out": str(tmp_path / "data" / "d"), "episodes": 4, "elsewhere": "/data/x"}
    assert portable(config, tmp_path) == {"out": "<out>/data/d", "episodes": 4, "elsewhere": "/data/x"}
    old, new = stage_key(config, []), stage_key(portable(config, tmp_path), [])
    (tmp_path / "data" / "d").mkdir(parents=True)
    StageRunner(tmp_path, None, ("a",)).run("a", old, lambda: ({"d": str(tmp_path / "data" / "d")}, {}))
    ran = []
    StageRunner(tmp_path, None, ("a",)).run("a", new, lambda: (ran.append(1), ({}, {}))[1], [tmp_path / "data" / "d"], old)
    assert not ran and (tmp_path / "data" / "d").is_dir()
    assert json.loads((tmp_path / "pipeline.json").read_text())["stages"]["a"]["key"] in (old, new)


def test_from_a_stage_redoes_it_and_every_later_one(tmp_path):
    """The cache in isolation (the run above reruns only the report, to keep CI short)."""
    from worldloom.pipeline.stages import StageRunner

    ran = []
    def fn(name):
        return lambda: (ran.append(name), ({}, {"n": len(ran)}))[1]
    for redo_from, expected in ((None, ["a", "b", "c"]), (None, []), ("b", ["b", "c"])):
        ran.clear()
        runner = StageRunner(tmp_path, redo_from, ("a", "b", "c"))
        for name in ("a", "b", "c"):
            runner.run(name, f"key-{name}", fn(name))
        assert ran == expected, redo_from
    runner = StageRunner(tmp_path, None, ("a", "b", "c"))
    runner.run("a", "another key", fn("a"))  # a changed config redoes the stage
    assert ran == ["b", "c", "a"]


def test_from_a_later_stage_on_a_new_folder_says_the_earlier_ones_run_first(tmp_path, capsys):
    """`pipeline run --from label` on a new folder ran every stage without a word."""
    from worldloom.pipeline.stages import StageRunner

    StageRunner(tmp_path / "new", "c", ("a", "b", "c"))
    assert capsys.readouterr().out == f"[pipeline] --from c: a, b never completed in {tmp_path / 'new'}, so they run first\n"
    runner = StageRunner(tmp_path, None, ("a", "b", "c"))
    runner.run("a", "key-a", lambda: ({}, {}))
    capsys.readouterr()
    StageRunner(tmp_path, "c", ("a", "b", "c"))
    assert capsys.readouterr().out == f"[pipeline] --from c: b never completed in {tmp_path}, so it runs first\n"
    StageRunner(tmp_path, "b", ("a", "b", "c"))
    assert capsys.readouterr().out == ""  # what --from redoes is asked for: nothing to say
    StageRunner(tmp_path, "c", ("a", "b", "c"), unused=("b",))  # a stage this run does not have (the study's
    assert capsys.readouterr().out == ""  # dream without --world-model) was said to run first


def test_a_stage_run_again_first_removes_what_it_wrote_before(tmp_path, capsys):
    """A redone stage (another config, or --from) starts from nothing: the capture would find a dataset of
    another config where it writes, a trainer a run it may not resume (`pipeline run` again with other
    --sizes.* into the same --out stopped at the capture). An interrupted stage asked again with the
    same config keeps its outputs (it resumes); with another, they go."""
    import pytest

    from worldloom.pipeline.stages import StageRunner

    data, gifs = tmp_path / "data" / "d", tmp_path / "figures"
    def writer(tag):
        def fn():
            assert not data.exists(), "the stage found what it wrote before"
            data.mkdir(parents=True)
            (data / "rows").write_text(tag)
            gifs.mkdir(exist_ok=True)
            (gifs / f"rollout-{tag}.gif").write_text(tag)
            return {"d": str(data)}, {}
        return fn
    writes = [data, gifs / "rollout-*.gif"]
    keep = tmp_path / "figures" / "other.png"
    StageRunner(tmp_path, None, ("a", "b")).run("a", "k1", writer("1"), writes)
    keep.write_text("not the stage's")
    StageRunner(tmp_path, None, ("a", "b")).run("a", "k1", writer("x"), writes)  # cached: nothing removed
    assert (data / "rows").read_text() == "1"
    StageRunner(tmp_path, None, ("a", "b")).run("a", "k2", writer("2"), writes)
    assert (data / "rows").read_text() == "2" and sorted(p.name for p in gifs.iterdir()) == ["other.png", "rollout-2.gif"]
    out = capsys.readouterr().out
    assert "a: running again (its config or its inputs changed)" in out
    assert "a: removed what it wrote before: data/d, figures/rollout-1.gif" in out
    StageRunner(tmp_path, "a", ("a", "b")).run("a", "k2", writer("3"), writes)  # --from a: redone from nothing
    assert (data / "rows").read_text() == "3" and "a: running again (asked to by --from a)\n[pipeline] a: removed" in capsys.readouterr().out

    def interrupted():
        data.mkdir(parents=True, exist_ok=True)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, None, ("a", "b")).run("a", "k4", lambda: (writer("4")(), interrupted())[1], writes)
    def resumed():
        assert (data / "rows").read_text() == "4"  # the same config again: what it wrote is kept, to resume
        return {}, {}
    StageRunner(tmp_path, None, ("a", "b")).run("a", "k4", resumed, writes)
    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path, None, ("a", "b")).run("a", "k5", lambda: (writer("5")(), interrupted())[1], writes)
    StageRunner(tmp_path, None, ("a", "b")).run("a", "k6", writer("6"), writes)  # another config: cleaned first
    assert (data / "rows").read_text() == "6" and keep.read_text() == "not the stage's"
    with pytest.raises(ValueError, match="inside the run directory"):
        StageRunner(tmp_path, "a", ("a", "b")).run("a", "k7", writer("7"), [tmp_path])


def test_a_redone_training_stage_keeps_the_runs_other_commands_put_in_its_run(tmp_path, capsys):
    """`agent eval --in-world-model WM_RUN` trains its critic into WM_RUN/scorer-<Task> (from real frames: still
    valid for a retrained world model); a pipeline run again with other sizes removed it with the world model
    (a new-user trial, session 44). The run's own files and its evaluation reports go; another command's run stays."""
    from worldloom.pipeline.stages import StageRunner

    wm = tmp_path / "world-model"

    def train(tag):
        def fn():
            assert not (wm / "config.json").exists() and not (wm / "eval").exists(), "the stage found its old run"
            wm.mkdir(exist_ok=True)
            (wm / "config.json").write_text(json.dumps({"kind": "world_model", "tag": tag}))
            (wm / "eval").mkdir()
            (wm / "eval" / "eval.json").write_text("{}")
            return {"wm": str(wm)}, {}
        return fn
    StageRunner(tmp_path, None, ("pretrain",)).run("pretrain", "k1", train("1"), [wm])
    critic = wm / "scorer-Explore"
    critic.mkdir()
    (critic / "config.json").write_text(json.dumps({"kind": "task_scorer"}))
    (critic / "weights").write_text("trained")
    StageRunner(tmp_path, None, ("pretrain",)).run("pretrain", "k2", train("2"), [wm])
    assert json.loads((wm / "config.json").read_text())["tag"] == "2" and (critic / "weights").read_text() == "trained"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left aside
    assert ("pretrain: removed what it wrote before: world-model (kept what other commands wrote inside: "
            "world-model/scorer-Explore)") in capsys.readouterr().out


def _interrupt_a_from_run_and_ask_again(out, again, capsys) -> None:
    """Run stages a, b, c; then --from a, Ctrl-C'd in b after its first checkpoint; then `again` (a --from or None)."""
    import pytest

    from worldloom.pipeline.stages import StageRunner

    order, ran = ("a", "b", "c"), []

    def stage(name, stop=False):
        def fn():
            (out / name).mkdir(exist_ok=True)
            ran.append((name, sorted(p.name for p in (out / name).iterdir())))
            (out / name / f"step{len(ran)}").write_text("")
            if stop:
                raise KeyboardInterrupt
            return {name: str(out / name)}, {}
        return fn

    def run_all(redo_from, stop=None):
        runner = StageRunner(out, redo_from, order)
        for name in order:
            runner.run(name, f"key-{name}", stage(name, stop == name), [out / name])

    out.mkdir()
    run_all(None)
    ran.clear()
    with pytest.raises(KeyboardInterrupt):
        run_all("a", stop="b")
    assert ran == [("a", []), ("b", [])]
    ran.clear()
    capsys.readouterr()
    run_all(again)
    assert ran == [("b", ["step2"]), ("c", [])], again  # a stays done, b resumes, c is still redone
    assert "[pipeline] a: cached" in capsys.readouterr().out
    assert "redo" not in (out / "pipeline.json").read_text()  # finished: a later run caches everything
    ran.clear()
    run_all(None)
    assert ran == []


def test_a_from_run_interrupted_and_asked_again_resumes(tmp_path, capsys):
    """`pipeline run --from pretrain` Ctrl-C'd said 're-run the same command to resume'; that command removed
    the checkpoint it had saved and trained from step 0 (and a re-run without --from 'cached' the old eval)."""
    _interrupt_a_from_run_and_ask_again(tmp_path / "same", "a", capsys)
    _interrupt_a_from_run_and_ask_again(tmp_path / "plain", None, capsys)


def test_a_stage_whose_outputs_are_gone_runs_again_with_every_later_one(tmp_path, capsys):
    """A deleted dataset or model folder was 'cached' by its record in pipeline.json: the later stages and the
    report then read a folder that was not there."""
    import shutil

    from worldloom.pipeline.stages import StageRunner

    ran = []

    def fn(name):
        def make():  # c writes inside b's folder, as pretrain_eval inside pretrain's world-model
            ran.append(name)
            folder = tmp_path / ("b/c" if name == "c" else name)
            folder.mkdir(parents=True, exist_ok=True)
            return {"dir": str(folder)}, {}
        return make

    for _ in range(2):
        runner = StageRunner(tmp_path, None, ("a", "b", "c"))
        for name in ("a", "b", "c"):
            runner.run(name, f"key-{name}", fn(name))
    assert ran == ["a", "b", "c"]
    shutil.rmtree(tmp_path / "b")
    capsys.readouterr()
    runner = StageRunner(tmp_path, None, ("a", "b", "c"))
    for name in ("a", "b", "c"):
        runner.run(name, f"key-{name}", fn(name))
    assert ran == ["a", "b", "c", "b", "c"] and (tmp_path / "b").is_dir()
    out = capsys.readouterr().out
    assert "a: cached" in out and "b: running again (b is gone" in out
    assert "c: running again (an earlier stage ran again" in out  # not 'b/c is gone': the user deleted b


def test_a_stage_whose_report_another_command_rewrote_runs_again(tmp_path, capsys):
    """A new-user trial (session 57) ran `pretrain eval` into the pipeline's own world-model/eval with other
    settings; the pipeline then called its eval stage cached, and the report showed that run's pictures beside
    the pipeline's numbers. A file a stage fingerprinted and another command rewrote makes it run again."""
    from worldloom.pipeline.stages import StageRunner, fingerprint

    ran = []

    def make():
        ran.append(1)
        (tmp_path / "wm" / "eval").mkdir(parents=True, exist_ok=True)
        (tmp_path / "wm" / "eval" / "eval.json").write_text('{"horizon": 8}')
        return {"eval": str(tmp_path / "wm" / "eval")}, {"fingerprints": {"wm/eval/eval.json": fingerprint(
            tmp_path / "wm" / "eval" / "eval.json")}}

    for _ in range(2):
        StageRunner(tmp_path, None, ("a",)).run("a", "k", make, [tmp_path / "wm" / "eval"])
    assert ran == [1] and "a: cached" in capsys.readouterr().out
    (tmp_path / "wm" / "eval" / "eval.json").write_text('{"horizon": 4}')  # another `pretrain eval`
    StageRunner(tmp_path, None, ("a",)).run("a", "k", make, [tmp_path / "wm" / "eval"])
    out = capsys.readouterr().out
    assert ran == [1, 1] and "a: running again (wm/eval/eval.json was rewritten since, by another command; this stage" \
        in out, out
    assert (tmp_path / "wm" / "eval" / "eval.json").read_text() == '{"horizon": 8}'
    StageRunner(tmp_path, None, ("a",)).run("a", "k", make, [tmp_path / "wm" / "eval"])
    assert ran == [1, 1] and "a: cached" in capsys.readouterr().out


def test_a_stage_run_again_with_its_old_config_runs_every_stage_that_reads_it_again(tmp_path, capsys):
    """A run interrupted under another preset had removed and started its capture; asked again with the first
    preset, the capture ran again, the IDM and labels were 'cached' (their keys were their configs') though made
    from the old data, and the interrupted world model, resumed, refused its changed data on every run (a new-user
    trial, session 57). A later stage's key takes the token drawn each time an earlier one runs."""
    import json

    from worldloom.pipeline.stages import StageRunner, stage_key

    ran = []

    def pipeline(config_a: str, stop_in: str | None = None) -> None:
        runner, keys = StageRunner(tmp_path, None, ("a", "b", "c")), {}
        for name, upstream in (("a", ()), ("b", ("a",)), ("c", ("b",))):
            keys[name] = stage_key(config_a if name == "a" else name, [runner.made_key(u, keys[u]) for u in upstream])

            def make(name=name):
                (tmp_path / name).mkdir(exist_ok=True)
                if name == stop_in:
                    raise KeyboardInterrupt
                ran.append(name)
                return {"dir": str(tmp_path / name)}, {}
            runner.run(name, keys[name], make, [tmp_path / name])

    pipeline("micro")
    pipeline("micro")
    assert ran == ["a", "b", "c"] and capsys.readouterr().out.count("cached") == 3
    with pytest.raises(KeyboardInterrupt):
        pipeline("tiny", stop_in="a")  # removes a's output, starts a with another config, is stopped
    pipeline("micro")
    out = capsys.readouterr().out
    assert ran == ["a", "b", "c", "a", "b", "c"], ran
    assert "b: running again (its config or its inputs changed)" in out and "c: running again" in out, out
    pipeline("micro")
    assert ran == ["a", "b", "c", "a", "b", "c"] and capsys.readouterr().out.count("cached") == 3
    # a pipeline.json from before the token: its stages stay done (their keys are their configs')
    state = json.loads((tmp_path / "pipeline.json").read_text())
    keys = {}
    for name, upstream in (("a", ()), ("b", ("a",)), ("c", ("b",))):
        keys[name] = stage_key("micro" if name == "a" else name, [keys[u] for u in upstream])
        state["stages"][name].pop("made")
        state["stages"][name]["key"] = keys[name]
    (tmp_path / "pipeline.json").write_text(json.dumps(state))
    pipeline("micro")
    assert ran == ["a", "b", "c", "a", "b", "c"] and capsys.readouterr().out.count("cached") == 3


def test_a_stage_whose_dataset_another_command_changed_runs_again_and_keeps_what_was_added(tmp_path, capsys):
    """A stage's key held its config and its inputs' keys, never what its datasets held: episodes merged into a
    dataset the IDM read (`dataset merge X --out data/labeled`) left the IDM, the labels and the world model
    'cached' on the data as it was. A stage records its datasets' content fingerprints and runs again, with every
    later one, when one changed; a run whose datasets did not change stays cached."""
    import numpy as np
    from conftest import pixel_frames

    from worldloom.datasets import DatasetWriter
    from worldloom.datasets.writer import content_fingerprint
    from worldloom.errors import UserError
    from worldloom.pipeline.cli import main as cli
    from worldloom.pipeline.stages import StageRunner

    def write(root, ids):
        with DatasetWriter(root, 16, 16, fps=20) as w:
            for i in ids:
                w.add_episode(f"ep-{i}", pixel_frames(6, 16, 16, seed=i), buttons=np.zeros((6, 20), bool),
                              camera=np.zeros((6, 2), np.float32), env="voxel", seed=i, player="mixture")

    data, ran = tmp_path / "data" / "labeled", []
    write(data, range(2))

    def pipeline():
        runner = StageRunner(tmp_path, None, ("idm", "label"))
        for name in ("idm", "label"):
            def make(name=name):
                ran.append(name)
                (tmp_path / name).mkdir(exist_ok=True)
                return {"dir": str(tmp_path / name)}, {}
            runner.run(name, f"key-{name}", make, [tmp_path / name], reads=[data] if name == "idm" else ())

    pipeline()
    before = content_fingerprint(data)
    cli(["dataset", "validate", str(data)])  # reading and checking a dataset changes nothing
    assert content_fingerprint(data) == before
    pipeline()
    assert ran == ["idm", "label"] and capsys.readouterr().out.count("cached") == 2
    write(tmp_path / "more", [7])
    assert cli(["dataset", "merge", str(tmp_path / "more"), "--out", str(data)]) == 0
    capsys.readouterr()
    pipeline()
    out = capsys.readouterr().out
    assert ran == ["idm", "label", "idm", "label"], out
    assert "idm: running again (data/labeled changed since it ran (episodes added, replaced or removed by another " \
        "command); this stage and every later one)" in out, out
    assert "label: running again (an earlier stage ran again" in out
    from worldloom.datasets import Dataset

    assert sorted(Dataset(data).episode_ids) == ["ep-0", "ep-1", "ep-7"]  # what the user added stays
    pipeline()
    assert ran == ["idm", "label", "idm", "label"] and capsys.readouterr().out.count("cached") == 2
    # a dataset path in pipeline.json stays inside the run, as every output's does
    state = json.loads((tmp_path / "pipeline.json").read_text())
    state["stages"]["idm"]["reads"] = {"../elsewhere": "0" * 16}
    (tmp_path / "pipeline.json").write_text(json.dumps(state))
    with pytest.raises(UserError, match=r"stages\.idm\.reads"):
        StageRunner(tmp_path, None, ("idm", "label"))


def test_the_pipeline_runs_again_from_the_stage_that_reads_a_dataset_another_command_changed(demo, tmp_path):
    """The real job: an episode merged into its labeled data retrains the IDM and every stage after it, the capture
    stays cached and keeps the added episode; asked again, every stage is cached."""
    import shutil

    from worldloom.datasets import Dataset

    out = tmp_path / "run"
    shutil.copytree(demo[0], out, symlinks=True)
    labeled = out / "data" / "labeled"
    count = len(Dataset(labeled).episode_ids)
    subprocess.run([WORLDLOOM, "dataset", "merge", str(out / "data" / "heldout"), "--out", str(labeled)], check=True,
                   capture_output=True)
    stdout = _run(out)
    assert "capture: cached" in stdout and "idm: running again (data/labeled changed since it ran" in stdout, stdout
    for stage in ("idm_eval", "label", "pretrain", "pretrain_eval"):
        assert f"{stage}: running again" in stdout, stdout
    assert len(Dataset(labeled).episode_ids) > count
    stdout = _run(out)
    for stage in ("capture", "idm", "idm_eval", "label", "pretrain", "pretrain_eval"):
        assert f"{stage}: cached" in stdout, stdout


def test_unknown_preset_is_one_line(tmp_path):
    proc = subprocess.run([WORLDLOOM, "pipeline", "run", "--preset", "huge", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "micro" in proc.stderr and "Traceback" not in proc.stderr


def test_out_of_another_kind_or_a_file_is_one_line_and_nothing_is_written(tmp_path, capsys):
    from conftest import pixel_frames, tree_digest

    from worldloom.checkpoint import write_run_config
    from worldloom.datasets import DatasetWriter
    from worldloom.pipeline.cli import main

    labeled, idm, readme = tmp_path / "walk" / "labeled", tmp_path / "walk" / "idm", tmp_path / "README.md"
    with DatasetWriter(labeled, 32, 32) as w:
        w.add_episode("ep-0", pixel_frames(4, 32, 32))
    idm.mkdir()
    write_run_config(idm, "idm", {})
    readme.write_text("# notes\n")
    expected = {labeled: "holds a WorldLoom dataset (dataset.json), not a pipeline run; give a new --out "
                "(or the folder of a pipeline run to resume it)",
                idm: 'holds an IDM run (config.json with "kind": "idm"), not a pipeline run; give a new --out '
                "(or the folder of a pipeline run to resume it)",
                readme: "is a file, not a folder; give a new folder for a pipeline run"}
    before = tree_digest(tmp_path)
    for out, message in expected.items():
        assert main(["pipeline", "run", "--preset", "micro", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"worldloom pipeline: error: --out {out} {message}", err
    assert tree_digest(tmp_path) == before
