"""Shared test fixtures: small synthetic pixel-art frames and a tiny written dataset."""

from __future__ import annotations

import os

# Before torch loads anywhere in the test process: see worldloom/__init__.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under `pytest -n N` (make test) the N worker processes share the CPUs: each worker's torch (and
# the CLI subprocesses it starts, which inherit this) gets its share of them instead of a thread
# per CPU each, N x oversubscribed. On 2 cores, test_idm.py + test_pretrain.py under -n 2: 180 s
# with torch's default, 140 s with this (measured 2026-12-03). Ray's workers set their own (1).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _stage_bars_wait_for_a_busy_machine(monkeypatch):
    """A command's stage bar shows after SHOW_AFTER_S (0.5 s): a one-line error found later, as on a CI
    machine running two test processes beside CLI subprocesses, had the bar's line above it, and the
    tests that count the error's lines failed by the machine's speed. In-process tests wait 60 s here;
    the tests of the bar itself set their own delay (0: every stage drawn)."""
    monkeypatch.setattr("worldloom.progress.SHOW_AFTER_S", 60.0)


def pixel_frames(num: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """`(num, H, W, 3)` uint8 frames that look like pixel art: 8x8 tiles from a small palette,
    scrolling one pixel per frame, with the frame index drawn in the top row (so every frame
    differs and an off-by-one read shows)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    tiles = rng.integers(0, len(palette), (height // 8 + 2, width // 8 + 2))
    world = palette[tiles].repeat(8, 0).repeat(8, 1)  # (H+16, W+16, 3)
    frames = np.empty((num, height, width, 3), np.uint8)
    for t in range(num):
        dx = t % 8
        frames[t] = world[:height, dx : dx + width]
        frames[t, 0, :16] = np.unpackbits(np.array([t >> 8, t & 255], np.uint8))[:, None] * 255
    return frames


def random_actions(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(buttons (T, 20) bool, camera (T, 2) float32 degrees)."""
    rng = np.random.default_rng(seed)
    return rng.random((num, 20)) < 0.2, rng.normal(0, 3, (num, 2)).astype(np.float32)


def tree_digest(root) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`: equal before and after means nothing was written."""
    import hashlib
    from pathlib import Path

    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def start_v2_dataset(root) -> None:
    """An empty dataset whose manifest is format version 2 (no caption column), as a WorldLoom of
    2026-11 wrote it; open a `DatasetWriter` on `root` to add episodes to it."""
    import json
    from pathlib import Path

    from worldloom.datasets import DatasetWriter

    DatasetWriter(root, 64, 64).close()
    path = Path(root) / "dataset.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 2
    del manifest["caption_column"]
    path.write_text(json.dumps(manifest))


def make_run(folder, kind: str) -> str:
    """An empty run folder of `kind` ("idm", "world_model", "policy"): its config.json, nothing else."""
    from worldloom.checkpoint import write_run_config

    folder.mkdir()
    write_run_config(folder, kind, {})
    return str(folder)


def assert_out_refused(cli, argv: list[str], out, message: str, capsys, one_line: bool = False) -> None:
    """`cli(argv + ["--out", out])` exits 2 with an error whose last line is `worldloom STAGE: error: --out OUT MESSAGE...`
    (the only line if `one_line`) and writes nothing into `out`."""
    before = tree_digest(out)
    assert cli([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(f"worldloom {argv[0]}: error: --out {out} {message}"), err
    assert not one_line or err.count("\n") == 0, err
    assert tree_digest(out) == before  # no checkpoint/, config.json or shard written into it


@pytest.fixture
def make_frames():
    return pixel_frames


@pytest.fixture
def small_dataset(tmp_path):
    """A dataset of 4 episodes (lengths 40, 33, 20, 50; the last unlabeled), two shards."""
    from worldloom.datasets import DatasetWriter

    root = tmp_path / "ds"
    lengths = (40, 33, 20, 50)
    with DatasetWriter(root, 32, 32, fps=20, rows_per_group=16, shard_max_frames=60, config={"test": True}) as w:
        for i, n in enumerate(lengths):
            if i == 3:
                w.add_episode(f"ep-{i}", pixel_frames(n, 32, 32, seed=i), label_source="none", split="val")
            else:
                buttons, camera = random_actions(n, seed=i)
                w.add_episode(f"ep-{i}", pixel_frames(n, 32, 32, seed=i), buttons=buttons, camera=camera,
                              rewards=np.arange(n, dtype=np.float32), env="synthetic", seed=i, player="random")
    return root


class LocalBucket:
    """A bucket on moto's S3 server on loopback, named as users name theirs.

        s3_bucket.uri("d")   # s3://worldloom-test/d?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1
        s3_bucket.keys()     # {"d/dataset.json", ...}: the objects written (not pyarrow's folder markers)
    """

    name = "worldloom-test"

    def __init__(self, host: str, port: int):
        import boto3

        self.query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        self.client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        self.client.create_bucket(Bucket=self.name)

    def uri(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}?{self.query}"

    def keys(self, prefix: str = "") -> set[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix).get("Contents", [])
        return {o["Key"] for o in listed if not o["Key"].endswith("/")}

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)


@pytest.fixture
def s3_bucket(monkeypatch):
    """A fresh `LocalBucket` on its own moto S3 server (127.0.0.1, a free port), stopped after the test;
    the AWS credentials of the environment are moto's test ones, as in the trials' setup."""
    moto_server = pytest.importorskip("moto.server")
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield LocalBucket(*server.get_host_and_port())
    finally:
        server.stop()


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a small tmpfs (`full_disk(size)` -> its path), unmounted after the test: a real full disk;
    `full_disk(size, read_only=True)`: a read-only one (which root cannot write either, unlike a chmod).
    Mounting needs root (CI runs as root); without it the test says why it cannot run."""
    import subprocess

    mounted = []

    def make(size: str, read_only: bool = False):
        folder = tmp_path / f"small-{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"a full disk needs a small tmpfs, and mounting one needs root: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or IPv4-mapped loopback (::ffff:127.x.y.z: a dual-stack socket bound to 127.x)."""
    import ipaddress

    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class ListeningSockets:
    """Every listening TCP socket and bound UDP socket of this process and all its descendants
    (a local Ray cluster: GCS, raylet, agents, workers), sampled by a thread while the block runs,
    so that sockets a worker holds for a moment are seen too.

        with ListeningSockets() as sockets:
            capture(...)
        assert not sockets.outside_loopback()
    """

    def __init__(self, interval_s: float = 0.2):
        import threading

        self.interval_s = interval_s
        self.seen: dict[tuple[str, int, str], set[str]] = {}  # (ip, port, tcp|udp) -> process titles
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        for proc in [me, *me.children(recursive=True)]:
            try:
                cmdline = proc.cmdline()
                title = os.path.basename(cmdline[0]) if cmdline else proc.name()
                if title.startswith("python") and len(cmdline) > 1:  # Ray's Python daemons: name them by script
                    title = next((os.path.basename(a) for a in cmdline[1:] if a.endswith(".py")), title)
                for conn in proc.net_connections(kind="inet"):
                    udp = conn.type == 2
                    if conn.laddr and (conn.status == psutil.CONN_LISTEN or (udp and not conn.raddr)):
                        key = (conn.laddr.ip, conn.laddr.port, "udp" if udp else "tcp")
                        self.seen.setdefault(key, set()).add(title[:48])
            except (psutil.Error, IndexError):
                continue

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> ListeningSockets:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def outside_loopback(self) -> dict[tuple[str, int, str], set[str]]:
        return {key: titles for key, titles in self.seen.items() if not is_loopback(key[0])}

    def table(self) -> str:
        return "\n".join(f"{ip:>24} {port:>6} {proto}  {', '.join(sorted(titles))}"
                         for (ip, port, proto), titles in sorted(self.seen.items(), key=lambda kv: sorted(kv[1])))


# The longest files first: with `pytest -n N --dist loadfile` (make test) each file runs whole in one
# process, taken in this order, so the long ones start at once and the short ones fill in after.
# Measured with `--durations` on 2 cores (2026-12-01): 200, 200, 105, 85, 75, 67, 66, 57 s; the capture
# files, each alone on the shared machine after their split: 95, 56 s. The Minetest tests stay in one file
# (one process): each checks that no engine outlives it, which engines of a second file running beside it would fail.
LONGEST_FIRST = ("test_envs_minetest.py", "test_pipeline.py", "test_docs.py", "test_capture_faults.py", "test_pretrain.py",
                 "test_agent.py", "test_trust.py", "test_capture.py", "test_pretrain_ray.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


def pytest_sessionstart(session):
    """Under `pytest -n` (make test), render a few voxel frames in the controller before the workers
    start: that fills numba's on-disk cache (`cache=True`), so the processes that render next (the
    test workers, their Ray actors, CLI subprocesses) load the renderer (~1 s) instead of several
    compiling it at once on a fresh checkout (~23 CPU-s each, measured 2026-12-01)."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    from worldloom.envs import make_env, make_player

    env = make_env("voxel", height=64, width=64)
    obs, info = env.reset(seed=0)
    player = make_player("mixture", seed=0)
    for _ in range(3):
        obs, _, _, _, info = env.step(player.act(obs, info))
