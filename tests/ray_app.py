"""The Ray Serve application for the tests: a local Ray (fractional CPUs, no dashboard, no auth
token files in the home folder) and the app deployed on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

#: Logical CPUs for the local Ray: its actors ask for none, so 4 replicas fit a 2-core machine.
RAY_CPUS = 4
TOKEN = "test-token"


def start_ray() -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 would write ~/.ray/auth_token
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)


def stop_ray() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def deployed(config: Path, replicas: int = 1) -> Iterator[str]:
    """The app on `config` with `replicas` engine replicas; yields HOST:PORT for websocket()."""
    from ray import serve

    from spatiora_tui.remote.ray_serve import APP_NAME, deploy

    port = free_port()
    serve.shutdown()  # Serve's proxy keeps the port it started on: a fresh one per app
    deploy(config, TOKEN, replicas, 0, "127.0.0.1", port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()  # its controller and proxy would otherwise poll on beside later tests
