"""The Ray cluster: start or join one (localhost only when local), actor pool size, errors back from actors."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

from ferlib import errors, locations
from ferlib.errors import FerError, InputError

ENGINES = ("local", "ray")
CONNECT_TIMEOUT_S = 5.0


class RayMissingError(InputError):
    """--engine ray without ray installed."""


# ----------------------------------------------------------------------------- the cluster
def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")


def _check_address(address: str) -> None:
    """A clear error when a cluster address does not answer (ray.init would retry for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise InputError(f"--address {address}: cannot reach the Ray cluster ({e.strerror or e}); start it with "
                         "`ray start --head` there, or leave --address out for a local cluster") from None


def _import_path_env() -> dict[str, str]:
    """PYTHONPATH for a local cluster's workers when ferlib runs from a source checkout (./setup.sh's
    editable install): the checkout first, the driver's own PYTHONPATH after it.

    Ray puts the driver's working directory at the front of every worker's sys.path. An editable
    install is found by an import hook that runs only after sys.path has been searched, so a
    `ferlib/` folder in the working directory (an empty one, or the checkout itself seen from its
    parent folder) became a namespace package `ferlib` in the workers: "cannot import name
    '__version__' from 'ferlib' (unknown location)". With the checkout on sys.path the real
    package is found there, and a regular package wins over namespace folders wherever they are
    on the path. An installed copy (site-packages, on every worker's sys.path) needs nothing."""
    root = locations.source_root()
    if root is None:
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set inside the block, as it was after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_ray(address: str | None, workers: int | None):
    """Import ray and connect to `address` (or start a local cluster of `workers` CPUs).
    Returns (ray, started_here)."""
    check_workers(workers)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage statistics, whoever starts the cluster
    if address:  # a cluster of machines (the Linux default), whatever an earlier local run set
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    else:  # Ray's single-machine mode: its node address is 127.0.0.1, every server binds there
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise RayMissingError("--engine ray needs Ray: pip install -e .[scale] (or the ray pin of "
                              "requirements.txt)") from None
    if address:
        _check_address(address)
    if ray.is_initialized():  # the caller's cluster (a notebook, the tests): used as it is
        return ray, False
    common: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                                  configure_logging=True)
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):  # also when ray was imported before
        constants.ENABLE_RAY_CLUSTER = bool(address)
    if address:
        env = {k: v for k, v in os.environ.items() if k.startswith("FERLIB_")}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"--address {address}: could not join the Ray cluster ({e})") from None
        return ray, True
    n = workers or min(2, os.cpu_count() or 1)
    # the local cluster's processes, and so its workers, inherit the driver's environment: PYTHONPATH
    # set while they start (a runtime_env would cost every actor a dedicated worker process, ~1-2 s)
    with _environ(_import_path_env()):
        ray.init(num_cpus=n, _node_ip_address="127.0.0.1", **common)
    bound = {node.get("NodeManagerAddress") for node in ray.nodes()}
    if bound != {"127.0.0.1"}:
        ray.shutdown()
        raise FerError(f"the local Ray cluster came up on {sorted(bound)}, not 127.0.0.1 only; not using it")
    return ray, True


def _pool_size(ray, workers: int | None, n_tasks: int) -> int:
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(n, n_tasks))


_REMOTE_FER_ERROR = re.compile(r"^ferlib\.errors\.(\w+): (.+)$", re.MULTILINE)


def _get(ray, ref, what: str):
    """ray.get; a ferlib error raised in an actor (its constructor included) comes back as itself."""
    try:
        return ray.get(ref)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, FerError):
            raise type(cause)(str(cause)) from None
        found = _REMOTE_FER_ERROR.findall(str(e))
        if found:
            name, message = found[-1]
            cls = getattr(errors, name, FerError)
            raise (cls if isinstance(cls, type) and issubclass(cls, FerError) else FerError)(message) from None
        raise FerError(f"Ray worker failed while {what}: {e}") from None


