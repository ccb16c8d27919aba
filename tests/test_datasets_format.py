"""The dataset format: round trip, appends, refusals, concurrent writers, S3, and the layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import pixel_frames, random_actions

from worldloom.datasets import (
    BUTTONS,
    Dataset,
    DatasetWriter,
    commit_shards,
    committed_episode_ids,
    schema,
)
from worldloom.errors import UserError


def test_round_trip_every_field(tmp_path):
    frames = pixel_frames(300, 64, 64, seed=1)
    buttons, camera = random_actions(300, seed=1)
    rewards = np.linspace(0, 1, 300, dtype=np.float32)
    terminated = np.zeros(300, bool)
    terminated[-1] = True
    with DatasetWriter(tmp_path / "d", 64, 64, fps=20, config={"made_by": "test"}) as w:
        w.add_episode("ep-a", frames, buttons=buttons, camera=camera, rewards=rewards, terminated=terminated,
                      env="voxel", env_config={"size": 32}, seed=7, player="explorer")
        w.add_episode("ep-b", frames[:10], buttons=buttons[:10], camera=camera[:10], label_source="idm",
                      label_model="idm-123", label_confidence=np.full(10, 0.75, np.float32))
        w.add_episode("ep-c", frames[:5])  # unlabeled footage
    ds = Dataset(tmp_path / "d")
    assert (ds.spec.height, ds.spec.width, ds.spec.fps, ds.spec.codec) == (64, 64, 20, "raw")
    assert ds.episode_ids == ["ep-a", "ep-b", "ep-c"]
    whole = ds.frames("ep-a")
    np.testing.assert_array_equal(whole.frames, frames)
    np.testing.assert_array_equal(whole.buttons, buttons)
    np.testing.assert_array_equal(whole.camera, camera)
    np.testing.assert_array_equal(whole.rewards, rewards)
    np.testing.assert_array_equal(whole.terminated, terminated)
    clip = ds.frames("ep-a", 250, 266)  # crosses a row-group boundary (256)
    np.testing.assert_array_equal(clip.frames, frames[250:266])
    np.testing.assert_array_equal(clip.buttons, buttons[250:266])
    assert clip.label_source == "env" and clip.label_confidence is None
    b = ds.frames("ep-b")
    assert b.label_source == "idm" and b.label_model == "idm-123"
    np.testing.assert_allclose(b.label_confidence, 0.75)
    c = ds.frames("ep-c")
    assert c.buttons is None and c.camera is None and np.isnan(c.rewards).all()
    row = ds.episodes.to_pylist()[0]
    assert row["num_steps"] == 300 and row["seed"] == 7 and json.loads(row["env_config"]) == {"size": 32}
    manifest = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert manifest["format_version"] == schema.FORMAT_VERSION
    assert manifest["action_space"]["buttons"] == list(BUTTONS)
    assert manifest["action_space"]["alignment"] == schema.ACTION_ALIGNMENT
    assert manifest["label_sources"] == ["env", "idm", "none"]
    assert manifest["config"] == {"made_by": "test"} and manifest["num_frames"] == 315
    (shard,) = manifest["shards"]
    assert shard["num_rows"] == 315 and shard["checksum"].startswith("blake2b-128:")
    meta = pq.ParquetFile(tmp_path / "d" / shard["path"]).metadata
    # Row groups never mix episodes: 256 + 44 for ep-a, then 10, then 5.
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [256, 44, 10, 5]


@pytest.mark.parametrize("codec", ["png", "jpeg", "h264"])
def test_image_codecs(tmp_path, codec):
    frames = pixel_frames(70, 32, 48, seed=2)  # h264: chunks of 32, 32 and 6 steps
    with DatasetWriter(tmp_path / "d", 32, 48, codec=codec) as w:
        w.add_episode("e", frames)
    ds = Dataset(tmp_path / "d")
    got = ds.frames("e").frames
    if codec == "png":
        np.testing.assert_array_equal(got, frames)
    else:
        mse = np.mean((got.astype(float) - frames) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30  # 4:4:4 on pixel art
    # A range that starts and ends inside chunks gives the same pixels as the whole decode.
    np.testing.assert_array_equal(ds.frames("e", 29, 67).frames, got[29:67])
    np.testing.assert_array_equal(ds.frames("e", 33, 34).frames, got[33:34])


@pytest.mark.parametrize("codec", ["raw", "h264"])
@pytest.mark.parametrize("sizes", [(20, 20, 20, 20, 20), (1, 45, 7, 47), (100,)])
def test_episode_written_in_parts_equals_one_pass(tmp_path, codec, sizes):
    """add_episode_parts with parts of any size stores what add_episode stores in one call: until
    2026-12-08 an h264 part that was not a multiple of 32 steps started a chunk mid-episode (at step 20),
    a clip from step 40 then failed ('rows do not start at a chunk'), and validate said 'valid'."""
    frames = pixel_frames(100, 32, 32, seed=4)
    buttons, camera = random_actions(100, seed=4)
    state = {"state_x": np.arange(100, dtype=np.float64)}
    captions = [f"clip {t // 40}" for t in range(100)]
    with DatasetWriter(tmp_path / "one", 32, 32, codec=codec) as w:
        w.add_episode("e", frames, buttons=buttons, camera=camera, state=state, caption=captions)
    bounds = np.cumsum((0,) + sizes)
    parts = ({"frames": frames[a:b], "buttons": buttons[a:b], "camera": camera[a:b],
              "state": {"state_x": state["state_x"][a:b]}, "caption": captions[a:b]}
             for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    with DatasetWriter(tmp_path / "parts", 32, 32, codec=codec) as w:
        assert w.add_episode_parts("e", parts) == 100
    one, streamed = Dataset(tmp_path / "one"), Dataset(tmp_path / "parts")
    rows, streamed_rows = one.read_table("e").to_pylist(), streamed.read_table("e").to_pylist()
    # the same rows; frame cells where one pass has them (x264 makes other bytes of the same frames each call)
    assert [{**r, "frame": bool(r["frame"])} for r in streamed_rows] == [{**r, "frame": bool(r["frame"])} for r in rows]
    whole = streamed.frames("e").frames
    for start, stop in ((0, 100), (40, 50), (20, 21), (63, 99)):
        a, b = one.frames("e", start, stop), streamed.frames("e", start, stop)
        np.testing.assert_array_equal(b.frames, whole[start:stop])  # a clip is the whole decode's steps
        assert np.abs(b.frames.astype(int) - a.frames).mean() < (3 if codec == "h264" else 1e-9)  # lossy: two encodes
        np.testing.assert_array_equal(b.camera, a.camera)
    from worldloom.datasets.validate import validate

    assert validate(tmp_path / "parts") == []


def test_h264_chunks_hold_no_b_frames_and_the_same_frames_encode_the_same():
    """The h264 codec's "no B-frames" was asked as x264's `bframes`, an option name libavcodec does not
    know (ignored without a word): chunks held B-frames, and the bytes of the same 32 frames depended
    on what the process had encoded before, so `capture run --codec h264` with 1 and 2 workers stored
    frames up to 62 levels apart (until 2026-12-08)."""
    import av

    from worldloom.datasets import codecs

    frames = pixel_frames(32, 64, 64, seed=4)
    ctx = av.CodecContext.create("h264", "r")
    decoded = [f for p in ctx.parse(codecs.encode_h264(frames)) + ctx.parse(None) for f in ctx.decode(p)] + ctx.decode(None)
    types = [int(f.pict_type) for f in decoded]  # AV_PICTURE_TYPE_I 1, _P 2, _B 3
    assert len(decoded) == 32 and set(types) <= {1, 2}, types
    made = set()
    for k in range(8):  # other encodes in between, as a recorder's episodes and other sizes do
        codecs.encode_h264(pixel_frames(32, 32 + 16 * (k % 3), 64, seed=k))
        made.add(codecs.encode_h264(frames.copy()))
    assert len(made) == 1


def test_validate_names_h264_chunks_off_their_steps(tmp_path):
    """A shard whose h264 chunks do not start at steps 0, 32, 64, ... (another tool's writer) is a problem
    validate names: a reader decodes a clip from the chunk start its step falls after."""
    import pyarrow as pa

    from worldloom.datasets import codecs
    from worldloom.datasets.validate import validate

    frames = pixel_frames(50, 32, 32, seed=5)
    with DatasetWriter(tmp_path / "d", 32, 32, codec="h264") as w:
        w.add_episode("e", frames)
    ds = Dataset(tmp_path / "d")
    shard = ds.location.join(ds.manifest["shards"][0]["path"])
    table = pq.read_table(shard)
    cells = [codecs.encode_h264(frames[:20])] + [b""] * 19 + [codecs.encode_h264(frames[20:])] + [b""] * 29
    table = table.set_column(table.schema.get_field_index("frame"), "frame", pa.array(cells, pa.binary()))
    pq.write_table(table, shard)
    problems = [str(p) for p in validate(tmp_path / "d") if "chunk" in p.message]
    assert problems and "row 20" in problems[0] and "step 20" in problems[0] and "32" in problems[0], problems


def test_reopen_appends_and_refuses_other_spec(tmp_path):
    root = tmp_path / "d"
    with DatasetWriter(root, 32, 32, fps=20) as w:
        w.add_episode("e0", pixel_frames(8, 32, 32))
    with DatasetWriter(root, 32, 32, fps=20) as w:
        w.add_episode("e1", pixel_frames(9, 32, 32))
        with pytest.raises(UserError, match="already in the dataset"):
            w.add_episode("e0", pixel_frames(8, 32, 32))
    assert Dataset(root).episode_ids == ["e0", "e1"]
    for kwargs, field in (({"height": 64}, "height"), ({"fps": 30}, "fps"), ({"codec": "png"}, "codec")):
        args = {"height": 32, "width": 32, "fps": 20, **kwargs}
        with pytest.raises(UserError, match=f"{field} differs"):
            DatasetWriter(root, **args)
    with pytest.raises(UserError, match=r"frames are uint8 \(4, 16, 16, 3\)"):
        with DatasetWriter(root, 32, 32) as w:
            w.add_episode("e2", pixel_frames(4, 16, 16))
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["format_version"] = 99
    (root / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="format_version is 99"):
        Dataset(root)
    with pytest.raises(UserError, match="format_version is 99"):
        DatasetWriter(root, 32, 32)


def test_driver_commits_worker_shards(tmp_path):
    root = tmp_path / "d"
    w = DatasetWriter(root, 32, 32, writer_id="actor-0", autocommit=False, shard_max_frames=10)
    w.add_episode("e0", pixel_frames(12, 32, 32))
    w.add_episode("e1", pixel_frames(3, 32, 32))
    infos = w.close()
    assert [i.num_rows for i in infos] == [12, 3]
    assert committed_episode_ids(root) == set()  # written but not committed: not in the dataset
    assert len(Dataset(root)) == 0
    payload = json.loads(json.dumps([i.to_json() for i in infos]))  # what crosses a Ray boundary
    commit_shards(root, payload)
    commit_shards(root, payload)  # committing twice is harmless (a retried driver)
    assert committed_episode_ids(root) == {"e0", "e1"}
    assert [s["path"] for s in Dataset(root).manifest["shards"]] == [
        "frames/part-actor-0-00000.parquet", "frames/part-actor-0-00001.parquet"]
    w2 = DatasetWriter(root, 32, 32, writer_id="actor-0")  # same id again: continues numbering
    w2.add_episode("e2", pixel_frames(3, 32, 32))
    assert w2.close()[0].path == "frames/part-actor-0-00002.parquet"


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import pixel_frames, random_actions
    from worldloom.datasets import DatasetWriter
    k = int(sys.argv[1])
    with DatasetWriter({root!r}, 32, 32, writer_id=f"w{{k}}", shard_max_frames=25) as w:
        for e in range(6):
            b, c = random_actions(20, seed=e)
            w.add_episode(f"w{{k}}-e{{e}}", pixel_frames(20, 32, 32, seed=100 * k + e), buttons=b, camera=c)
""")


def test_concurrent_writer_processes(tmp_path):
    root = str(tmp_path / "d")
    code = WORKER.format(tests=os.path.dirname(__file__), root=root)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], stderr=subprocess.PIPE) for k in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    ds = Dataset(root)
    assert sorted(ds.episode_ids) == sorted(f"w{k}-e{e}" for k in range(3) for e in range(6))
    assert len(ds.manifest["shards"]) == 3 * 3 and ds.manifest["num_frames"] == 3 * 6 * 20
    for k in range(3):
        np.testing.assert_array_equal(ds.frames(f"w{k}-e5").frames, pixel_frames(20, 32, 32, seed=100 * k + 5))
    assert not [p for p in os.listdir(os.path.join(root, "frames")) if p.endswith(".tmp")]


REWRITER = textwrap.dedent("""
    import pyarrow as pa
    from worldloom.datasets import schema, storage
    loc = storage.resolve({root!r})
    for i in range(1500):
        rows = [{{"episode_id": f"e{{k}}-" + "x" * (i % 13), "num_frames": k + 1}} for k in range(i % 40 + 1)]
        table = pa.Table.from_pylist(rows).cast(pa.schema([("episode_id", pa.string()), ("num_frames", pa.int64())]))
        storage.write_table_atomic(loc, loc.join(schema.EPISODES_NAME), table)
""")


def test_episodes_table_read_while_another_process_replaces_it(tmp_path):
    # Found by CI (test_concurrent_writer_processes, once): a reader that opened the path twice
    # (footer, then pages) paired two versions across a writer's rename: "Page was smaller than
    # expected". One handle reads one version, whichever it is; here a rename lands every ~2 ms.
    from worldloom.datasets import storage

    root = tmp_path / "d"
    root.mkdir()
    loc = storage.resolve(root)
    proc = subprocess.Popen([sys.executable, "-c", REWRITER.format(root=str(root))], stderr=subprocess.PIPE)
    reads = 0
    try:
        while proc.poll() is None:
            if storage.exists(loc, loc.join(schema.EPISODES_NAME)):
                table = storage.read_episodes(loc)  # raises UserError on a torn read
                assert table.num_rows >= 1
                reads += 1
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert reads > 50  # the reads overlapped the renames


def test_s3_through_moto(tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="bucket")
        uri = f"s3://bucket/runs/d?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        frames = pixel_frames(30, 32, 32)
        buttons, camera = random_actions(30)
        with DatasetWriter(uri, 32, 32, writer_id="remote") as w:
            w.add_episode("s3-ep", frames, buttons=buttons, camera=camera)
        ds = Dataset(uri)
        np.testing.assert_array_equal(ds.frames("s3-ep", 5, 21).frames, frames[5:21])
        assert committed_episode_ids(uri) == {"s3-ep"}
        keys = {o["Key"] for o in boto3.client("s3", endpoint_url=f"http://{host}:{port}").list_objects_v2(Bucket="bucket")["Contents"]
                if not o["Key"].endswith("/")}  # pyarrow's directory markers
        assert keys == {"runs/d/dataset.json", "runs/d/episodes.parquet", "runs/d/frames/part-remote-00000.parquet"}
    finally:
        server.stop()


def test_writer_error_keeps_finished_episodes(tmp_path):
    root = tmp_path / "d"
    with pytest.raises(RuntimeError):
        with DatasetWriter(root, 32, 32) as w:
            w.add_episode("kept", pixel_frames(5, 32, 32))
            raise RuntimeError("the env crashed")
    assert Dataset(root).episode_ids == ["kept"]


def _rewrite_first_shard(root, edit) -> str:
    """Rewrite the dataset's first shard with pyarrow, as another tool would; its relative path."""
    rel = json.loads((root / "dataset.json").read_text())["shards"][0]["path"]
    table = pq.read_table(root / rel)
    pq.write_table(edit(table), root / rel)
    return rel


def _set(table, name, index, value):
    import pyarrow as pa

    values = table.column(name).to_pylist()
    values[index] = value
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type))


@pytest.mark.parametrize("edit, words", [
    (lambda t: _set(t, "action_camera_yaw", 5, float("nan")), "row 5: action_camera_yaw is nan"),
    (lambda t: _set(t, "action_camera_pitch", 5, float("inf")), "row 5: action_camera_pitch is inf"),
    (lambda t: _set(t, "action_camera_yaw", 5, 1e30), "row 5: action_camera_yaw is 1.0000000150474662e+30"),
    (lambda t: _set(t, "action_camera_yaw", 5, None), "row 5: action_camera_yaw is null"),
    (lambda t: _set(t, "action_jump", 5, None), "row 5: action_jump is null"),
    (lambda t: _set(t, "step", 6, 5), "row 6: holds step 5 of episode 'ep-0'"),  # a step repeated
    (lambda t: t.take(list(range(3)) + [4, 3] + list(range(5, t.num_rows))), "row 3: holds step 4"),  # reordered
    (lambda t: _set(t, "step", 39, 40), "row 39: holds step 40"),  # a gap
], ids=["nan", "inf", "huge", "null-camera", "null-button", "duplicate-step", "reordered", "gap"])
def test_training_readers_refuse_rows_another_tool_broke(small_dataset, edit, words):
    """A labeled step whose action is not a finite, in-range value, or rows that are not the episode's
    steps in order, are refused where they are read, naming the shard and row: never a traceback
    (NaN two-hot targets), a loss of NaN blamed on the learning rate, or frames trained out of order."""
    from worldloom.agent.data import load_bc_episodes
    from worldloom.idm.data import load_episodes

    rel = _rewrite_first_shard(small_dataset, edit)
    for read in (lambda: Dataset(small_dataset).frames("ep-0"),
                 lambda: load_episodes([str(small_dataset)]),
                 lambda: load_bc_episodes([str(small_dataset)], "dataset")):
        with pytest.raises(UserError, match="dataset validate") as err:
            read()
        assert f"{small_dataset}/{rel} {words}" in str(err.value) and "\n" not in str(err.value)
    assert Dataset(small_dataset).frames("ep-1").frames.shape == (33, 32, 32, 3)  # the other shard reads as before


def test_every_trainer_refuses_datasets_that_cannot_be_used_together(small_dataset, tmp_path):
    """The same dataset given twice (by another spelling of its path, or as a copy) would count
    twice and could put one copy in training and the other in validation; two frame rates would
    give the same camera degrees two meanings. All three trainers refuse both, in one line."""
    import shutil

    from worldloom.agent.data import load_bc_episodes
    from worldloom.idm.data import load_episodes
    from worldloom.pretrain.data import check_sources

    shutil.copytree(small_dataset, tmp_path / "copy")
    with DatasetWriter(tmp_path / "slow", 32, 32, fps=10) as w:
        buttons, camera = random_actions(40, seed=9)
        w.add_episode("other", pixel_frames(40, 32, 32, seed=9), buttons=buttons, camera=camera)
    same, copy, slow = str(small_dataset), str(tmp_path / "copy"), str(tmp_path / "slow")
    cases = [([same, same + "/"], f"{same}/ is given twice (also as {same})"),
             ([same, copy], f"{copy}: episode 'ep-0' is also in {same} (a copy of the same data?)"),
             ([same, slow], f"datasets disagree: {same} is 32x32 at 20 fps, {slow} is 32x32 at 10 fps")]
    trainers = (lambda d: load_episodes(d, same_frames=True), lambda d: load_bc_episodes(d), check_sources)
    for data, words in cases:
        for train in trainers:
            with pytest.raises(UserError) as err:
                train(data)
            assert str(err.value).startswith(words) and "\n" not in str(err.value), err.value
    assert len(load_episodes([same, slow])) == 4  # evaluation may mix rates (and sizes: it resizes)


def test_a_gcs_uri_gives_up_after_seconds_not_pyarrows_fifteen_minutes():
    # pyarrow's default retry limit (15 min) made `dataset inspect gs://...` hang offline; a URI's own wins
    from datetime import timedelta

    from worldloom.datasets.storage import GCS_RETRY_LIMIT_S, resolve

    loc = resolve("gs://some-bucket/data")
    assert loc.uri == "gs://some-bucket/data" and loc.path == "some-bucket/data"
    assert loc.fs.__reduce__()[1][0]["retry_time_limit"] == timedelta(seconds=GCS_RETRY_LIMIT_S) < timedelta(minutes=1)
    own = resolve("gs://some-bucket/data?retry_limit_seconds=300")
    assert own.fs.__reduce__()[1][0]["retry_time_limit"] == timedelta(seconds=300)


def test_an_encoder_option_the_encoder_does_not_take_is_an_error_naming_it(tmp_path):
    """PyAV hands an option libavcodec did not take back in the codec context's `options` and encodes without it,
    saying nothing (libx264's "no B-frames" asked as 'bframes' was ignored so until 2026-12-08). Every encoder
    WorldLoom opens goes through worldloom.io.open_encoder, which names such an option; the project's own options
    (the h264 codec's, VideoWriter's) are all taken."""
    from fractions import Fraction

    import av

    from worldloom.datasets import codecs
    from worldloom.io import EncoderOptionError, VideoWriter, open_encoder

    def x264() -> av.CodecContext:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = ctx.height = 64
        ctx.pix_fmt, ctx.time_base, ctx.framerate = "yuv444p", Fraction(1, 20), Fraction(20, 1)
        return ctx

    with pytest.raises(EncoderOptionError, match=r"encoder libx264 does not take the option\(s\) 'bframes' "):
        open_encoder(x264(), {"crf": "18", "bframes": "0"})
    open_encoder(ctx := x264(), codecs.H264_OPTIONS)  # the dataset codec's own options
    assert ctx.is_open and not ctx.options
    with av.open(str(tmp_path / "s.mp4"), "w") as out:  # an output stream's encoder: the same check
        stream = out.add_stream("libx264", rate=20)
        stream.width = stream.height = 64
        with pytest.raises(EncoderOptionError, match="'crff'"):
            open_encoder(stream.codec_context, {"crff": "18"})
    with VideoWriter(tmp_path / "v.mp4", fps=20) as video:  # VideoWriter's (dataset export, rollouts, agent eval)
        for frame in pixel_frames(3, 64, 64, seed=0):
            video.write(frame)
    assert (tmp_path / "v.mp4").stat().st_size > 0
