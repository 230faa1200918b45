"""`spatiora serve --ray`: the engine as a Ray Serve application, for several GPU boxes (the serve
extra: `pip install 'spatiora-tui[serve]'`). Nothing else in Spatiora imports Ray.

Three deployments:

    Ingress         FastAPI, token-authenticated: the same websocket /v1/engine and frames as
                    `serve --http`, so `--engine ray://HOST:PORT` is an ordinary RemoteEngine.
                    It answers hello/state/queue itself and forwards each engine call to...
    EngineReplica   one per GPU, max_ongoing_requests=1: a LocalEngine with the base model loaded
                    once (warm) and adapter sets multiplexed with @serve.multiplexed. A call's
                    multiplexed id is its task's base + adapter set + file hashes, so Ray routes
                    it to a replica that already holds the set when one is free; a replica holds
                    up to MAX_SETS sets (Ray's LRU evicts the oldest). Frames stream back through
                    the handle's streaming response.
    Board           one small actor: cancel requests reach the replica running the job (a
                    replica busy with a job cannot be sent a second call), and each replica's
                    latest hardware snapshot reaches the ingress (for the hardware pane).

Inside a replica a Hub runs the calls, so a generation there behaves exactly as under
`serve --stdio` (previews, init images, errors in the engines' words).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request,
# WebSocket) at run time, through the methods Ray Serve wraps.
import asyncio
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket
from ray import serve
from ray.serve.handle import DeploymentHandle

from spatiora_tui import __version__
from spatiora_tui.config import Settings, load_settings
from spatiora_tui.remote.frames import pack
from spatiora_tui.remote.http import close, pump, token_ok
from spatiora_tui.remote.server import PROTOCOL, Hub, Policy, Refused, screen
from spatiora_tui.remote.websocket import ENGINE_PATH
from spatiora_tui.remote.wire import encode
from spatiora_tui.units import MB

#: Adapter sets a replica holds at once (Ray's per-replica LRU of multiplexed ids).
MAX_SETS = 2
#: Seconds a replica waits for a call's next frame before it checks that its engine still works
#: (the reply then comes as an error rather than never: the replica is the only slot).
WATCH_S = 5.0
#: Seconds between a replica's hardware reports to the board.
REPORT_S = 1.0
APP_NAME = "spatiora"

Frame = tuple[dict[str, Any], bytes]


def file_digest(path: Path, cache: dict[tuple[str, int, int], str]) -> str:
    """The sha256 of a file (12 hex digits), cached by path, size and modification time."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in cache:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()[:12]
    return cache[key]


def multiplexed_id(base: str, task: str, adapters: list[tuple[str, float | None, str]]) -> str:
    """A task's multiplexed id: base model + task + each adapter's name, weight and file hash
    (a retrained LoRA under the same name is another id, so no replica serves the old one)."""
    sets = ",".join(f"{name}@{weight}:{digest}" for name, weight, digest in adapters)
    return f"{base}|{task}|{sets}"


@serve.deployment(num_replicas=1, max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0})
class Board:
    """Cancels and hardware reports between the ingress and the replicas."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._cancelled: set[str] = set()
        self._hardware: dict[str, dict[str, Any]] = {}

    async def cancel(self, job: str) -> None:
        self._cancelled.add(job)
        self._events.setdefault(job, asyncio.Event()).set()

    async def watch(self, job: str) -> bool:
        """Returns when `job` is cancelled (True) or released (False)."""
        await self._events.setdefault(job, asyncio.Event()).wait()
        return job in self._cancelled

    async def release(self, job: str) -> None:
        event = self._events.pop(job, None)
        self._cancelled.discard(job)
        if event is not None:
            event.set()

    async def report(self, replica: str, hardware: dict[str, Any]) -> None:
        self._hardware[replica] = hardware

    async def hardware(self, replica: str | None) -> dict[str, Any]:
        reports: dict[str, dict[str, Any]] = self._hardware
        if replica is not None and replica in reports:
            return reports[replica]
        return next(iter(reports.values()), {"snapshot": None, "by_task": {}, "by_stage": {}})


class HeldSet:
    """An adapter set Ray's LRU says this replica holds (the engine's own tiers keep the files
    and device copies within their limits; the LRU decides where calls are routed)."""

    def __init__(self, task: str) -> None:
        self.task = task


@serve.deployment(max_ongoing_requests=1, ray_actor_options={"num_cpus": 0})
class EngineReplica:
    """One GPU: a LocalEngine with the base model kept warm; see the module docstring."""

    def __init__(self, config: str | None, board: DeploymentHandle) -> None:
        from spatiora_tui.engine.local import LocalEngine
        from spatiora_tui.hw.telemetry import Telemetry

        self.settings = load_settings(config)
        self.telemetry = Telemetry.from_settings(self.settings)
        self.telemetry.start()
        self.engine = LocalEngine(self.settings, telemetry=self.telemetry)
        self.engine.load()
        # A deployment serves the model it was deployed with: clients switch tasks, not models.
        self.hub = Hub(self.engine, self.telemetry, Policy("off", configured_model=self.settings.model.source))
        self.board = board
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self.loads = 0  # adapter sets brought in (multiplexing misses)
        self.switches = 0  # generations that switched the active set first (resident: milliseconds)
        self.requests = 0
        self._digests: dict[tuple[str, int, int], str] = {}
        self._ids: dict[str, str] = {}
        threading.Thread(target=self._report, name="spatiora-report", daemon=True).start()

    @serve.multiplexed(max_num_models_per_replica=MAX_SETS)
    async def adapter_set(self, model_id: str) -> HeldSet:
        task = model_id.split("|")[1]
        await asyncio.to_thread(self.engine.switch_task, task)
        self.loads += 1
        return HeldSet(task)

    def ids(self) -> dict[str, str]:
        """Each task's multiplexed id, from the adapter files this replica sees."""
        base = self.engine.model.name if self.engine.model is not None else "?"
        found: dict[str, str] = {}
        for task in self.settings.tasks:
            adapters = []
            try:
                for ref in task.adapters:
                    adapters.append(
                        (ref.name, ref.weight, file_digest(self.engine.loras.find(ref.name), self._digests))
                    )
            except Exception:
                continue  # a missing adapter: the call goes anywhere and fails there, in the engine's words
            found[task.name] = multiplexed_id(base, task.name, adapters)
        return found

    def _id_for(self, message: dict[str, Any]) -> str:
        """A call routed without a multiplexed id (another router) still holds its task's set
        through the same LRU, so what is held is counted alike whatever routed the call."""
        request = message.get("request")
        task = message.get("name") if message.get("type") == "switch_task" else None
        if isinstance(request, dict):
            task = request.get("task")
        if not isinstance(task, str):
            return ""
        if task not in self._ids:
            self._ids = self.ids()
        return self._ids.get(task, "")

    def stats(self) -> dict[str, Any]:
        """What the routing comparison counts (benchmarks/ray_routing.py)."""
        return {"replica": self.name, "loads": self.loads, "switches": self.switches, "requests": self.requests}

    async def frames(self, message: dict[str, Any], blob: bytes, job: str) -> AsyncIterator[Frame]:
        """Run one engine call and stream its frames, the last its `ok` or `error`."""
        rid = int(message["id"])
        self.requests += 1
        yield {"type": "queued", "id": rid, "replica": self.name}, b""
        model_id = serve.get_multiplexed_model_id() or self._id_for(message)
        if model_id:
            try:
                await self.adapter_set(model_id)
            except Exception as exc:
                yield {"type": "error", "id": rid, "kind": "engine", "message": _said(exc)}, b""
                return
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Frame] = asyncio.Queue()

        def send(frame: dict[str, Any], payload: bytes) -> None:
            loop.call_soon_threadsafe(out.put_nowait, (frame, payload))

        connection = self.hub.connect(job, send)
        watcher = asyncio.ensure_future(self._watch(job, connection, rid))
        await asyncio.to_thread(connection.receive, message, blob)
        try:
            while True:
                try:
                    frame, payload = await asyncio.wait_for(out.get(), timeout=WATCH_S)
                except asyncio.TimeoutError:
                    if self.hub.alive():
                        continue  # a long step or load: the hub's worker is still at it
                    yield {"type": "error", "id": rid, "kind": "internal", "message": "the engine stopped working"}, b""
                    return
                if frame["type"] == "queued":
                    continue  # the replica's own queue: one call at a time, nobody waits
                yield frame, payload
                if frame.get("id") == rid and frame["type"] in ("ok", "error"):
                    result = frame.get("result")
                    if isinstance(result, dict) and result.get("timings", {}).get("switch_ms"):
                        self.switches += 1
                    return
        except asyncio.CancelledError:  # the ingress gave up on it: its client is gone
            connection.close()
            raise
        finally:
            watcher.cancel()
            await self.board.release.remote(job)

    async def _watch(self, job: str, connection: Any, rid: int) -> None:
        if await self.board.watch.remote(job):
            await asyncio.to_thread(connection.receive, {"type": "cancel", "id": -1, "target": rid})

    def _report(self) -> None:
        from spatiora_tui.remote.server import _hardware

        while True:
            try:
                self.board.report.remote(self.name, _hardware(self.telemetry)).result(timeout_s=10)
            except Exception:
                pass  # the board is restarting; the next report gets through
            time.sleep(REPORT_S)


class _Client:
    """One websocket at the ingress."""

    def __init__(self, ingress: "Ingress", ws: WebSocket, name: str) -> None:
        self.ingress = ingress
        self.ws = ws
        self.name = name
        self.lock = asyncio.Lock()
        self.jobs: dict[int, str] = {}  # request id -> job, while in flight
        self.active: str | None = None
        self.replica: str | None = None  # the one that ran this client's last call
        self.running: set[asyncio.Task[None]] = set()
        self.held = 0  # bytes of uploads its calls in flight carry

    async def send(self, frame: dict[str, Any], payload: bytes = b"") -> None:
        async with self.lock:
            await self.ws.send_bytes(pack(frame, payload))

    async def serve(self) -> None:
        async def refuse(problem: str) -> None:
            await self.send({"type": "error", "id": None, "kind": "frame", "message": problem})

        try:
            problem = await pump(self.ws, self.receive, refuse)
        finally:
            for task in list(self.running):
                task.cancel()  # the replica's stream is cancelled: it stops the call within a step
        await close(self.ws, problem)

    async def receive(self, message: dict[str, Any], blob: bytes) -> None:
        kind, rid = message["type"], message.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            await self.send({"type": "error", "id": None, "kind": "frame", "message": "a request needs an integer id"})
            return
        ingress = self.ingress
        if kind == "hello":
            if isinstance(message.get("client"), str) and message["client"].strip():
                self.name = message["client"].strip()[:100]
            await self.send({"type": "ok", "id": rid, "version": __version__, "protocol": PROTOCOL})
        elif kind == "state":
            state = {"tasks": encode(ingress.settings.tasks), "active": self.active, "model": ingress.model}
            await self.send({"type": "ok", "id": rid, **state})
        elif kind == "hardware":
            await self.send({"type": "ok", "id": rid, **(await ingress.board.hardware.remote(self.replica))})
        elif kind == "queue":
            await self.send({"type": "ok", "id": rid, "jobs": list(ingress.calls.values())})
        elif kind == "echo":
            await self.send({"type": "ok", "id": rid}, blob)
        elif kind == "prefetch":
            await self.send({"type": "ok", "id": rid})  # Ray routes each call to a replica holding its set
        elif kind == "cancel":
            target = message.get("target")
            job = self.jobs.get(target) if isinstance(target, int) else None
            if job is not None:
                await ingress.board.cancel.remote(job)
            await self.send({"type": "ok", "id": rid, "cancelled": job is not None})
        elif kind == "switch_model":
            said = (
                "a Ray deployment serves the base model it was deployed with; deploy again with another [model] source"
            )
            await self.send({"type": "error", "id": rid, "kind": "engine", "message": said})
        elif kind in ("load", "switch_task", "models", "generate"):
            try:  # refused here, before the call takes a replica's only slot
                screen(message, blob, ingress.policy)
            except Refused as exc:
                await self.send({"type": "error", "id": rid, "kind": "refused", "message": str(exc)})
                return
            policy = ingress.policy
            if len(self.running) >= policy.max_calls or self.held + len(blob) > policy.max_bytes:
                said = (
                    f"this client has {len(self.running)} calls ({self.held // MB} MB of uploads) waiting, the most "
                    "one client may; wait for some to finish"
                )
                await self.send({"type": "error", "id": rid, "kind": "refused", "message": said})
                return
            self.held += len(blob)
            task = asyncio.ensure_future(self.forward(message, blob))
            self.running.add(task)

            def done(finished: "asyncio.Task[None]", size: int = len(blob)) -> None:
                self.running.discard(finished)
                self.held -= size

            task.add_done_callback(done)
        else:
            await self.send({"type": "error", "id": rid, "kind": "engine", "message": f"unknown request type {kind!r}"})

    async def forward(self, message: dict[str, Any], blob: bytes) -> None:
        """Send an engine call to a replica (one holding its task's set, when Ray can) and relay
        its frames."""
        ingress, rid, kind = self.ingress, int(message["id"]), message["type"]
        request = message.get("request")
        task = (
            message.get("name") if kind == "switch_task" else request.get("task") if isinstance(request, dict) else None
        )
        job = uuid.uuid4().hex
        self.jobs[rid] = job
        ingress.calls[job] = {"job": job, "client": self.name, "type": kind, "task": task, "running": True}
        try:
            ids = await ingress.task_ids(refresh=kind == "switch_task") if isinstance(task, str) else {}
            handle = ingress.replicas.options(stream=True, multiplexed_model_id=ids.get(task, "") if task else "")
            async for frame, payload in handle.frames.remote(message, blob, job):
                if frame["type"] == "queued":
                    self.replica = frame.get("replica")
                    continue
                if frame["type"] == "ok" and frame.get("id") == rid:
                    if kind == "load":
                        ingress.model = frame.get("model")
                    if kind in ("switch_task", "generate") and isinstance(task, str):
                        self.active = task
                await self.send(frame, payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the replica died or Ray refused: the client hears it, in one line
            await self.send({"type": "error", "id": rid, "kind": "internal", "message": _said(exc)})
        finally:
            self.jobs.pop(rid, None)
            ingress.calls.pop(job, None)


app = FastAPI(title="Spatiora engine (Ray Serve)", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    """The clients' side: see the module docstring."""

    def __init__(
        self, replicas: DeploymentHandle, board: DeploymentHandle, config: str | None, token: str | None
    ) -> None:
        self.replicas = replicas
        self.board = board
        self.settings: Settings = load_settings(config)
        self.policy = Policy("off", configured_model=self.settings.model.source)
        self.token = token
        self.model: Any = None
        self.ids: dict[str, str] = {}
        self.calls: dict[str, dict[str, Any]] = {}  # job -> what `queue` lists
        self.numbers = itertools.count(1)

    def allowed(self, headers: Any) -> bool:
        return token_ok(headers, self.token)

    @app.get("/v1/hello")
    def hello(self, request: Request) -> dict[str, Any]:
        if not self.allowed(request.headers):
            raise HTTPException(401, "a token is needed: Authorization: Bearer TOKEN")
        return {"version": __version__, "protocol": PROTOCOL}

    @app.websocket(ENGINE_PATH)
    async def engine(self, ws: WebSocket) -> None:
        if not self.allowed(ws.headers):
            await ws.close(code=1008, reason="the token is missing or wrong")
            return
        await ws.accept()
        client = _Client(self, ws, f"client {next(self.numbers)}")
        await client.serve()

    # -- what the clients share ---------------------------------------------------------------------

    async def task_ids(self, refresh: bool = False) -> dict[str, str]:
        if refresh or not self.ids:
            self.ids = await self.replicas.ids.remote()
        return self.ids


def _said(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def application(
    config: Path | None, token: str | None, replicas: int, gpus_per_replica: float, router: Any = None
) -> Any:
    """The bound application `serve.run` deploys (`config` None: the default settings; `router`
    a RequestRouterConfig for the engine replicas, where Ray's own routing is not wanted)."""
    where = str(config) if config is not None else None
    board = Board.bind()
    options: dict[str, Any] = dict(
        num_replicas=replicas, ray_actor_options={"num_cpus": 0, "num_gpus": gpus_per_replica}
    )
    if router is not None:
        options["request_router_config"] = router
    engine = EngineReplica.options(**options).bind(where, board)
    return Ingress.bind(engine, board, where, token)


def build(args: dict[str, Any]) -> Any:
    """An application builder for Ray's own config files and KubeRay's RayService
    (`import_path: spatiora_tui.remote.ray_serve:build`), with args config (path to config.toml,
    on storage every node sees), replicas, gpus_per_replica, and the token in the environment
    variable SPATIORA_TOKEN of the Serve deployment."""
    token = os.environ.get("SPATIORA_TOKEN") or None
    if token is None:
        raise ValueError("set SPATIORA_TOKEN in the deployment's runtime_env env_vars: clients must present it")
    return application(
        Path(str(args["config"])), token, int(args.get("replicas", 1)), float(args.get("gpus_per_replica", 1))
    )


def deploy(
    config: Path | None,
    token: str | None,
    replicas: int,
    gpus_per_replica: float,
    host: str,
    port: int,
    router: Any = None,
) -> str:
    """Deploy the application on the Ray cluster `ray.init` joined (or started): Serve's HTTP
    proxy on host:port. Returns the address clients pass to --engine."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(config, token, replicas, gpus_per_replica, router), name=APP_NAME, route_prefix="/")
    return f"ray://{host}:{port}"


def replica_stats() -> list[dict[str, Any]]:
    """Each replica's counts (a handle call per replica until each has answered)."""
    handle = serve.get_deployment_handle("EngineReplica", app_name=APP_NAME)
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(200):
        stats = handle.stats.remote().result(timeout_s=60)
        seen[stats["replica"]] = stats
        if len(seen) >= _replica_count():
            break
    return list(seen.values())


def _replica_count() -> int:
    status = serve.status().applications[APP_NAME].deployments["EngineReplica"]
    return int(sum(status.replica_states.values()))
