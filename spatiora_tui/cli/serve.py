"""`spatiora serve`: the engine for other processes (spatiora_tui/remote): one client over
stdin/stdout (--stdio, what `ssh HOST spatiora serve --stdio` starts), or several in turn over a
Unix socket or loopback HTTP (--http)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from spatiora_tui.cli.common import EXIT_OK, UsageError
from spatiora_tui.config import Settings, user_state_dir

if TYPE_CHECKING:
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.telemetry import Telemetry
    from spatiora_tui.remote.server import Policy


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the engine for other processes: --stdio (one client, through ssh) or --http (shared)",
        description="Run the engine for clients in other processes. --stdio: one client, frames on stdin and "
        "stdout (started by `--engine ssh://HOST`; SSH is the authentication and the encryption). --http: "
        "several clients in turn, on a Unix socket only you may open (default) or 127.0.0.1:PORT with a token; "
        "nothing listens on a network.",
    )
    how = serve.add_mutually_exclusive_group()
    how.add_argument("--stdio", action="store_true", help="speak the protocol on stdin/stdout")
    how.add_argument(
        "--http",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="serve clients in turn on a Unix socket (default: STATE_DIR/engine.sock; or a path) or on "
        "127.0.0.1:PORT (a token is written to STATE_DIR/serve-token); needs the http extra",
    )
    how.add_argument(
        "--ray",
        nargs="?",
        const="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="deploy the engine as a Ray Serve application on the Ray cluster of this machine (or $RAY_ADDRESS), "
        "one replica per GPU; clients use --engine ray://HOST:PORT with the token it writes; needs the serve extra",
    )
    serve.add_argument("--replicas", type=int, metavar="N", help="with --ray: engine replicas (default: one per GPU)")
    serve.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _ray(settings, args)
    if args.http is not None:
        return _http(settings, args.http)
    if not args.stdio:
        raise UsageError("say how to serve: --stdio (for `ssh HOST spatiora serve --stdio`) or --http [ADDRESS]")
    if sys.stdin.isatty() or sys.stdout.isatty():
        raise UsageError("serve --stdio speaks a binary protocol to a program, not to a terminal")
    # Frames go to the real stdout; anything a library prints goes to stderr instead of into them.
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    from spatiora_tui.remote.server import serve

    engine, telemetry = _engine(settings)
    try:
        serve(engine, sys.stdin.buffer, frames_out, telemetry, policy(settings))
    finally:
        telemetry.stop()
    return EXIT_OK


def _http(settings: Settings, address: str) -> int:
    import importlib.util

    from spatiora_tui.remote.http import INSTALL, check_free, listener, run
    from spatiora_tui.remote.server import Hub
    from spatiora_tui.remote.unix import AddressError

    if not all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn", "websockets")):
        raise UsageError(INSTALL)  # said before the model loads, not after

    try:
        where = listener(address, user_state_dir())
        check_free(where)  # said before the model loads, not after
    except AddressError as exc:
        raise UsageError(str(exc)) from None
    engine, telemetry = _engine(settings)
    hub = Hub(engine, telemetry, policy(settings))

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        say("loading the model…")
        engine.load(on_progress=lambda text: say(f"  {text}"))
        run(hub, where, say)
    except AddressError as exc:
        raise UsageError(str(exc)) from None
    finally:
        hub.close()
        telemetry.stop()
    return EXIT_OK


def _ray(settings: Settings, args: argparse.Namespace) -> int:
    """Deploy the Ray Serve app and keep it up until ctrl+c (then take it down)."""
    import secrets
    import signal
    import threading

    from spatiora_tui.remote.http import listener, remove_token, write_token
    from spatiora_tui.remote.unix import AddressError

    try:
        where = listener(args.ray, user_state_dir())
    except AddressError as exc:
        raise UsageError(str(exc).replace("serve --http", "serve --ray")) from None
    if where.socket_path is not None:
        raise UsageError("serve --ray listens on HOST:PORT (Ray Serve's HTTP proxy), e.g. serve --ray 127.0.0.1:8000")
    config = settings.source_file  # read again by each replica: on a cluster, from storage every node sees
    from importlib.metadata import PackageNotFoundError, version

    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        raise UsageError("serve --ray needs Ray Serve: pip install 'spatiora-tui[serve]'") from None
    if _version(ray_version) < RAY_MIN:
        raise UsageError(
            f"serve --ray needs Ray {'.'.join(map(str, RAY_MIN))} or later (token authentication for the cluster's "
            f"own services); this is Ray {ray_version}: pip install -U 'spatiora-tui[serve]'"
        )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = os.environ.get("RAY_ADDRESS") or None  # None: a cluster `ray start` began here, else a new one
    options: dict[str, object] = {}
    if address is None:
        # A cluster started here serves this machine only: its own services (GCS, raylet, the
        # workers) listen on loopback, and each needs Ray's cluster token (docs/security.md).
        # Set before Ray is imported: it reads them then.
        os.environ["RAY_AUTH_MODE"] = "token"
        has_token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
        if not has_token and not (Path.home() / ".ray" / "auth_token").exists():
            # Ray's processes inherit it; Ray refuses to start in token mode without one.
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        # Ray turns a node address of 127.0.0.1 into the host's own; this switch (Ray's, for
        # machines that form no cluster) keeps the node, and the services bound to it, on loopback.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        options = {"dashboard_host": "127.0.0.1"}
    try:
        import ray
        from ray import serve

        from spatiora_tui.remote import ray_serve
    except ImportError:
        raise UsageError("serve --ray needs Ray Serve: pip install 'spatiora-tui[serve]'") from None

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot join the Ray cluster at {address or 'this machine'}: {exc}") from None
    gpus = int(ray.cluster_resources().get("GPU", 0))
    replicas = args.replicas or max(gpus, 1)
    token = secrets.token_urlsafe(32)
    assert where.token_file is not None
    write_token(where.token_file, token, f"ray://{where.host}:{where.port}")
    say(f"deploying {replicas} engine replica(s) ({'1 GPU each' if gpus else 'no GPU in this cluster: CPU'})…")
    try:
        url = ray_serve.deploy(config, token, replicas, 1 if gpus else 0, where.host, where.port)
        say(
            f"serving on http://{where.host}:{where.port}, token in {where.token_file}; clients: "
            f"SPATIORA_TOKEN=$(cat {where.token_file}) spatiora --engine {url}"
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    finally:
        say("taking the application down…")
        serve.shutdown()
        ray.shutdown()
        remove_token(where.token_file)
    return EXIT_OK


#: The oldest Ray `serve --ray` runs on: token authentication for the cluster came in 2.52.
RAY_MIN = (2, 52)


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


def policy(settings: Settings) -> Policy:
    """What the server lets its clients do, from config.toml (docs/security.md)."""
    from spatiora_tui.remote.server import Policy

    return Policy(settings.security.remote_model_switch, configured_model=settings.model.source)


def _engine(settings: Settings) -> tuple[LocalEngine, Telemetry]:
    """The engine and its telemetry (sampling: what the clients' hardware panes show)."""
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw.telemetry import Telemetry

    telemetry = Telemetry.from_settings(settings)
    telemetry.start()
    return LocalEngine(settings, telemetry=telemetry), telemetry
