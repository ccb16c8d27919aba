"""The one Ray session of a command: a local cluster on loopback, or a cluster joined with --address.

    from worldloom.cluster import ray_session
    with ray_session(address=None, num_cpus=2):      # capture, label and pretrain inside share it
        ...

A stage that needs Ray calls `ray_session` too: if a session is already up (the pipeline opened
one, or the user called `ray.init`), it is used as it is and left running, so `--address` and
the worker count given to the pipeline reach every stage. A session this function started is
shut down when its block ends.

A local cluster listens on loopback only. Ray 2.x binds its servers (GCS, raylet and object
manager, every worker's gRPC server, the dashboard agent's gRPC and HTTP servers, the metrics
export, the runtime-env agent) to the node's IP, or to all interfaces when that IP is not
loopback; and `ray.init` turns a loopback `_node_ip_address` into the machine's own address
unless Ray runs in its single-machine mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the default
on macOS and Windows). So `ray_session` starts a local cluster in that mode (`LOOPBACK_ENV`, set
for the start and inherited by every Ray process) with the node IP 127.0.0.1 and no dashboard.
A cluster joined with `--address` keeps the settings it was started with (`ray start` binds to
the machine's address: that is how other nodes reach it). tests/test_trust.py lists the
listening sockets of every process of a local session.

Progress bars in Ray workers (the study's and the pipeline's training stages, Ray Train's workers):
Ray passes each of a worker's redraws to the driver as a line of its own, so a bar at tqdm's
default of up to ten redraws a second was as many lines in a log file (a tiny8 study's training
stages: 5,125 lines, 566 kB, with Ray's folding of repeated lines) and scrolled a terminal. The
workers of a session started or joined here redraw their bars every `worker_redraw_s()` seconds
instead (tqdm's `TQDM_MININTERVAL`, in the environment of a
local cluster's processes or in a joined cluster's job runtime_env; one a user exported is kept);
a bar's first and last states are still written, and the driver's own bars are as before.

`ray.init` takes SIGTERM with a handler that exits with code 15; inside a session this function
started, and while it starts one (`sigterm_while_starting`), SIGTERM stops the command as Ctrl-C does instead (the session is shut down on the way
out, exit code 143: worldloom.interrupts.sigterm_as_interrupt), and the handler from before is
given back when the session ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from worldloom.errors import UserError
from worldloom.interrupts import interrupt, sigterm_as_interrupt

__all__ = ["ray_session", "check_reachable", "check_auth", "cluster_resources", "store_credentials", "user_error_of",
           "actors_that_fit", "LOCAL_ADDRESS", "LOOPBACK_ENV", "ACTOR_BASE_BYTES"]

# `--num-workers` of every command whose workers are Ray actors (capture run, dataset ingest, idm
# label, agent eval, the pipelines): the same range and the same 0 everywhere (`num_actors`).
MAX_WORKERS = 4096
NUM_WORKERS_RANGE = "0: one per CPU of the cluster"
LOCAL_ADDRESS = "127.0.0.1"
# Ray's single-machine mode: services.get_node_ip_address() answers 127.0.0.1 instead of the
# address other machines would use, so ray.init keeps the loopback node IP it is given.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# A Ray worker's bar at a terminal: Ray prints each redraw as a new line, so one every 5 s (not tqdm's 0.1 s)
# keeps a bar's progress readable without scrolling the driver's own output away.
TERMINAL_WORKER_REDRAW_S = 5.0


# Ray waits a fixed 30 s for its raylet (ray/_private/node.py); on a 2-core machine running other
# Ray sessions beside it that wait ran out (seen in the test suite with 4 processes): one retry.
LOCAL_START_ATTEMPTS = 2


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray that is up, join `address` (HOST:PORT, auto, ray://...; unset: the RAY_ADDRESS
    environment variable, Ray's own convention, when it is set), or start a local cluster with
    `num_cpus` CPUs (None: all of this machine's) bound to loopback.

    Raises UserError (one line) when the cluster cannot be started or reached.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    named = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"include_dashboard": False, "log_to_driver": True}  # actors' errors still reach the user
    if not sys.stderr.isatty():  # actors' lines in a log file: no terminal colour codes around their prefix
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    workers_env = {"TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL") or f"{worker_redraw_s():g}"}
    if address:
        check_reachable(address, named=named)
        check_auth(address, named=named)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    for attempt in range(1 if address else LOCAL_START_ATTEMPTS):
        try:
            with sigterm_while_starting(on_sigterm):
                if address:
                    ray.init(address=address, logging_level=logging.WARNING, runtime_env={"env_vars": workers_env},
                             **quiet)
                else:  # our own cluster, on loopback; its start-up notices are noise; its processes inherit workers_env
                    with loopback_only(), environment(workers_env):
                        ray.init(num_cpus=num_cpus, _node_ip_address=LOCAL_ADDRESS, logging_level=logging.ERROR, **quiet)
            break
        except (ConnectionError, TimeoutError, ValueError) as err:
            where = f"join Ray at {named} {address}" if address else "start a local Ray cluster"
            raise UserError(f"cannot {where}: {err}") from None
        except Exception as err:  # noqa: BLE001 -- Ray raises a bare Exception when its raylet is slow to start
            if "timed out during startup" not in str(err):
                raise
            ray.shutdown()  # stops what did start
            if attempt + 1 == LOCAL_START_ATTEMPTS:
                raise UserError(f"a local Ray cluster did not start in {LOCAL_START_ATTEMPTS} tries of 30 s each "
                                "(Ray's raylet wait; a machine this busy starts it late): run the command again "
                                "when the machine is less loaded, or start Ray yourself and pass --address") from None
    drop_forwarded_noise()
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        yield
    finally:
        ray.shutdown()
        if main_thread:
            signal.signal(signal.SIGTERM, on_sigterm if on_sigterm is not None else signal.SIG_DFL)


@contextlib.contextmanager
def sigterm_while_starting(on_sigterm) -> Iterator[None]:
    """Around `ray.init`: its SIGTERM handler (set while it starts) exits with SystemExit(15), which ended the
    command with code 15 and no word when a SIGTERM came in those seconds (a new-user trial, session 57: a
    pipeline killed as its label stage started its cluster). Here that exit is what any SIGTERM is to the
    command: the cluster shut down, a KeyboardInterrupt carrying SIGTERM (the CLI's one line, exit code 143).
    Our handler stays in place up to the moment Ray sets its own, so a SIGTERM before it stops the same way."""
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        yield
    except (SystemExit, KeyboardInterrupt) as err:
        if isinstance(err, SystemExit) and err.code != signal.SIGTERM:
            raise
        import ray

        ray.shutdown()  # what did start
        if main_thread:
            signal.signal(signal.SIGTERM, on_sigterm if on_sigterm is not None else signal.SIG_DFL)
        if isinstance(err, SystemExit):
            raise interrupt(signal.SIGTERM) from None
        raise


def worker_redraw_s() -> float:
    """Seconds between a Ray worker's progress-bar redraws: each is a line on the driver (module docstring),
    so one every `LOG_EVERY_S` where the driver's stderr is a log file, every `TERMINAL_WORKER_REDRAW_S` at
    a terminal."""
    from worldloom.progress import LOG_EVERY_S

    return TERMINAL_WORKER_REDRAW_S if sys.stderr is not None and sys.stderr.isatty() else LOG_EVERY_S


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ inside the block (processes started there inherit them), restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Ray in its single-machine mode while a local cluster starts: `LOOPBACK_ENV` in the
    environment (the Ray processes started now inherit it) and in Ray's constant, which was read
    when `ray` was imported. Both are restored afterwards."""
    from ray._private import ray_constants

    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)  # None: a Ray without it (the test tells)
    if saved_flag is not None:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with environment(LOOPBACK_ENV):
            yield
    finally:
        if saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag


# Lines of Ray's own helpers that the driver does not pass on from the actors' output. Ray Train v2's
# PlacementGroupCleaner (a detached actor beside every TorchTrainer run) asks the state API, which the
# dashboard serves, whether the run's controller lives, every second or so; a session without the
# dashboard (ours: `include_dashboard=False`) answers no such query, and each failed one was a warning
# on the user's terminal: about 30 lines in a 45 s `pretrain train --num-workers 2` (a new-user trial).
# Without its answer the cleaner only keeps watching; the run's placement group still goes when the
# run ends or the session is shut down.
FORWARDED_NOISE = ("Failed to query Ray Train Controller actor state",)


def drop_forwarded_noise() -> None:
    """Wrap the driver's printer of the actors' lines (Ray's `ray_print_logs` handler) so that lines
    containing any of FORWARDED_NOISE are dropped; every other line is printed as before. Nothing
    changes where Ray's internals differ (the line-count test in tests/test_pretrain_ray.py tells)."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    handlers = getattr(dispatcher, "handlers", None)
    lock = getattr(dispatcher, "_lock", None)
    if not isinstance(handlers, list) or lock is None:
        return
    with lock:
        dispatcher.handlers = [(name, _without_noise(handler) if name == "ray_print_logs" else handler)
                               for name, handler in dispatcher.handlers]


def _without_noise(handler):
    if getattr(handler, "drops_noise", False):
        return handler

    def handle(data) -> None:
        lines = data.get("lines") if isinstance(data, dict) else None
        if isinstance(lines, list):
            kept = [line for line in lines if not any(noise in str(line) for noise in FORWARDED_NOISE)]
            if not kept and lines:
                return
            data = {**data, "lines": kept}
        handler(data)

    handle.drops_noise = True
    return handle


def check_reachable(address: str, timeout_s: float = 5.0, named: str = "--address") -> None:
    """UserError at once if nothing listens at HOST:PORT (ray.init would retry for minutes);
    `named`: where the address came from (the flag, or RAY_ADDRESS), as the message says."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://..., left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        unset = "leave --address out" if named == "--address" else "unset RAY_ADDRESS"
        raise UserError(f"{named} {address}: no Ray cluster answers there ({err}); start one with "
                        f"`ray start --head --port={port}` or {unset} to start a local one") from None


AUTH_MODE_ENV = "RAY_AUTH_MODE"


def check_auth(address: str, timeout_s: float = 5.0, named: str = "--address") -> None:
    """UserError at once if the cluster at HOST:PORT requires token authentication and this process
    does not say RAY_AUTH_MODE=token: `ray.init` would log InvalidAuthToken warnings for 20 s and then
    fail with "Failed to connect" and no word of the token (a new-user trial). One unauthenticated
    call to the GCS (its cluster id) tells; any other answer, or none, is left to `ray.init`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    if os.environ.get(AUTH_MODE_ENV, "").strip().lower() == "token":
        return  # the token goes with every call; a wrong one is Ray's error
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s)
            return
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAUTHENTICATED:
                return
    raise UserError(f"{named} {address}: the Ray cluster there requires token authentication; set "
                    f"{AUTH_MODE_ENV}=token and its token (RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH, or the file "
                    "~/.ray/auth_token that `ray start` wrote on the head node) and run the command again")


FORWARDED_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_")  # object-store credentials the actors need


def store_credentials(paths) -> dict[str, str]:
    """The driver's object-store credentials (its `AWS_*`, `GOOGLE_*`, `AZURE_*` variables) for Ray actors that
    read or write any of `paths` where one is a URI, else {}. A local cluster's actors inherit the driver's
    environment; a remote one's do not. They travel as an actor argument (kept in memory), never as a
    runtime_env, which Ray writes, env_vars included, into its session logs; the actor sets them first
    (`os.environ.update`). Until 2026-12-07 only `capture run` passed them on."""
    if not any("://" in str(p) for p in paths):
        return {}
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def cluster_resources() -> dict[str, float]:
    """CPU and GPU counts of the running session (empty when none is up)."""
    import ray

    if not ray.is_initialized():
        return {}
    return {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}


def num_actors(num_workers: int) -> int:
    """`--num-workers` as a count of actors: itself, or for 0 one per CPU of the running session
    (this machine's CPUs when none is up)."""
    return num_workers or max(1, int(cluster_resources().get("CPU", os.cpu_count() or 1)))


# One Ray actor's resident memory before its work: the Ray worker process with ray, numpy, pyarrow, PyAV and
# OpenCV imported and the stage's own code (measured with psutil, this repository, 2026-12-08: 206 MiB after
# `import ray`; a voxel recorder after its first reset 394-471 MiB, the renderer compiled by numba in each
# actor, and its peak 428 MiB after 400 steps at 64x64; torch adds about 230 MiB), rounded up for what a
# Ray worker holds beyond `import ray`. Stages add what their actors hold (capture.recorder_memory_bytes, ...).
ACTOR_BASE_BYTES = 512 << 20
TORCH_BYTES = 256 << 20  # what `import torch` adds to an actor (230 MiB measured as above)


def actors_that_fit(count: int, per_actor_bytes: int, what: str, command: str) -> int:
    """`count` actors of about `per_actor_bytes` each, capped to what fits in MEMORY_HEADROOM (80%) of this
    machine's free memory when every node of the running session is this machine (a local cluster, or a
    `ray start` here joined with --address); a cluster with other nodes keeps `count` (their memory is not
    asked). A cap is said in one line on stderr (`command`: e.g. "capture run"; `what`: "recorders").

    Until 2026-12-08 nothing checked: `capture run --num-workers 64` on a laptop started 64 actors, each
    compiling its renderer and holding its world, and Ray's OOM killer ended the job minutes in with a
    traceback. Raises UserError (one line) when not even one actor fits."""
    from worldloom.training import MEMORY_HEADROOM, available_memory_bytes

    if not session_is_this_machine():
        return count
    have = int(MEMORY_HEADROOM * available_memory_bytes(gpu=False))
    fit = min(count, have // max(1, per_actor_bytes))
    if fit < 1:
        raise UserError(f"worldloom {command}: one of its {what} needs about {per_actor_bytes / 2**30:.1f} GiB but "
                        f"{available_memory_bytes() / 2**30:.1f} GiB of memory is free here: free some memory, or "
                        "lower the size of the work (resolution, steps)")
    if fit < count:
        print(f"worldloom {command}: note: {count} {what} need about {count * per_actor_bytes / 2**30:.1f} GiB "
              f"({per_actor_bytes / 2**20:.0f} MiB each) but {available_memory_bytes() / 2**30:.1f} GiB of memory is "
              f"free here: starting {fit} (--num-workers {fit} says the same without this note)",
              file=sys.stderr, flush=True)
    return fit


def session_is_this_machine() -> bool:
    """True when the running Ray session's nodes are all this driver's node (False when none is up)."""
    import ray

    if not ray.is_initialized():
        return False
    here = ray.get_runtime_context().get_node_id()
    return all(node["NodeID"] == here for node in ray.nodes() if node.get("Alive"))


def user_error_of(err: BaseException) -> UserError | None:
    """The UserError a Ray task or actor raised, as a local one with the same one-line message (a
    RayTaskError's own text is a remote traceback ending in `worldloom.errors.UserError: ...`);
    None for any other failure, which stays a bug with its traceback."""
    cause = getattr(err, "cause", None)
    return UserError(str(cause)) if isinstance(cause, UserError) else None
