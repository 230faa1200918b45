"""Ray Serve routing at scale, simulated on this machine: does routing by adapter set (Ray's
@serve.multiplexed) beat plain round-robin and Ray's default routing?

A Poisson stream of requests over N task modes (each its own LoRA on the demo model) goes to R
engine replicas (the real EngineReplica deployment, CPU, max_ongoing_requests=1, each holding 2
adapter sets), once per routing policy, with the same arrival times and task sequence:

    multiplexed   each call carries its task's multiplexed id (what `serve --ray` does)
    round-robin   a RequestRouter that takes the free replicas in turn
    power-of-two  Ray's default router, calls without an id

Per policy it prints adapter-set loads and resident switches per request (from the replicas'
own counts), p50/p95 latency (arrival to final frame) and throughput.

    python -m benchmarks.ray_routing [--replicas 4] [--modes 8] [--requests 120] [--load 0.7]

The arrival rate is `load` x the rate the replicas finish requests when all are kept busy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("multiplexed", "round-robin", "power-of-two")


def round_robin_router() -> Any:
    from ray.serve.config import RequestRouterConfig

    return RequestRouterConfig(request_router_class="benchmarks.ray_routing:RoundRobin")


def _router_base() -> Any:
    from ray.serve.request_router import RequestRouter

    return RequestRouter


class RoundRobin(_router_base()):  # type: ignore[misc]
    """Plain round-robin over the replicas Ray offers (a busy one is skipped: the next try
    takes the next replica)."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._turn = 0

    async def choose_replicas(self, candidate_replicas: list[Any], pending_request: Any = None) -> list[list[Any]]:
        ordered = sorted(candidate_replicas, key=lambda replica: replica.replica_id.unique_id)
        turn = getattr(self, "_turn", 0)
        self._turn = turn + 1
        return [[ordered[turn % len(ordered)]]] if ordered else []


def write_modes(root: Path, modes: int, steps: int, size: int) -> Path:
    """A config with `modes` task modes, each with its own random LoRA for the demo UNet."""
    from diffusers import UNet2DConditionModel

    from spatiora_tui.config import AdapterRef, Settings, TaskSettings, settings_to_toml
    from spatiora_tui.engine.demo import ensure_demo, write_random_lora

    demo = ensure_demo(Path(os.environ["SPATIORA_CACHE_DIR"]))
    unet = UNet2DConditionModel.from_pretrained(str(demo / "pipeline" / "unet"))
    adapters = root / "adapters"
    adapters.mkdir(parents=True)
    tasks = []
    for index in range(modes):
        name = f"mode{index}"
        write_random_lora(unet, adapters, name, 8, ["to_q", "to_k", "to_v", "to_out.0"], seed=index)
        tasks.append(
            TaskSettings(
                name=name,
                adapters=(AdapterRef(name, 1.0),),
                prompt_template="{prompt}",
                scheduler="euler",
                steps=steps,
                width=size,
                height=size,
            )
        )
    config = root / "config.toml"
    config.write_text(settings_to_toml(Settings(tasks=tuple(tasks), base_dir=root)), encoding="utf-8")
    return config


@dataclasses.dataclass
class Row:
    policy: str
    requests: int
    loads: int
    switches: int
    p50_s: float
    p95_s: float
    throughput: float
    per_replica: list[int]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


async def stream(handle: Any, task: str, ids: dict[str, str], multiplexed: bool) -> None:
    message = {"type": "generate", "id": 1, "request": {"prompt": "a room", "task": task, "seed": 1}}
    options: dict[str, Any] = {"stream": True}
    if multiplexed:
        options["multiplexed_model_id"] = ids[task]
    async for frame, _ in handle.options(**options).frames.remote(message, b"", uuid.uuid4().hex):
        if frame["type"] == "error":
            raise RuntimeError(frame["message"])


async def drive(handle: Any, plan: list[tuple[float, str]], ids: dict[str, str], multiplexed: bool) -> list[float]:
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(at: float, task: str) -> float:
        await asyncio.sleep(max(0.0, start + at - loop.time()))
        arrived = loop.time()
        await stream(handle, task, ids, multiplexed)
        return loop.time() - arrived

    return list(await asyncio.gather(*(one(at, task) for at, task in plan)))


def run_policy(policy: str, config: Path, replicas: int, plan: list[tuple[float, str]], port: int) -> Row:
    from ray import serve

    from spatiora_tui.remote.ray_serve import APP_NAME, deploy, replica_stats

    router = round_robin_router() if policy == "round-robin" else None
    deploy(config, "bench", replicas, 0, "127.0.0.1", port, router=router)
    handle = serve.get_deployment_handle("EngineReplica", app_name=APP_NAME)
    ids = handle.ids.remote().result()
    # Warm each replica's engine (first-call costs are not routing); the counts start after.
    tasks = sorted(ids)
    asyncio.run(drive(handle, [(0.0, tasks[i % len(tasks)]) for i in range(replicas)], ids, policy == "multiplexed"))
    before = {entry["replica"]: entry for entry in replica_stats()}
    started = time.perf_counter()
    latencies = asyncio.run(drive(handle, plan, ids, policy == "multiplexed"))
    makespan = time.perf_counter() - started
    after = {entry["replica"]: entry for entry in replica_stats()}
    delta = {
        name: {key: after[name][key] - before.get(name, {}).get(key, 0) for key in ("loads", "switches", "requests")}
        for name in after
    }
    serve.delete(APP_NAME)
    return Row(
        policy,
        len(plan),
        sum(d["loads"] for d in delta.values()),
        sum(d["switches"] for d in delta.values()),
        statistics.median(latencies),
        p95(latencies),
        len(plan) / makespan,
        sorted((d["requests"] for d in delta.values()), reverse=True),
    )


def capacity(config: Path, replicas: int, port: int) -> float:
    """Requests per second the replicas finish when all are kept busy with one task (no set
    loads after the first): what the arrival rate is set from. Measured, not computed from one
    replica alone, because the replicas share this machine's cores."""
    from ray import serve

    from spatiora_tui.remote.ray_serve import APP_NAME, deploy

    deploy(config, "bench", replicas, 0, "127.0.0.1", port)
    handle = serve.get_deployment_handle("EngineReplica", app_name=APP_NAME)
    ids = handle.ids.remote().result()
    task = sorted(ids)[0]
    warm = [(0.0, task)] * replicas
    asyncio.run(drive(handle, warm, ids, True))
    began = time.perf_counter()
    asyncio.run(drive(handle, [(0.0, task)] * (replicas * 4), ids, True))
    rate = replicas * 4 / (time.perf_counter() - began)
    serve.delete(APP_NAME)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--load", type=float, default=0.7, help="offered load: arrival rate / measured capacity")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    root = Path(tempfile.mkdtemp(prefix="spatiora-ray-"))
    os.environ.setdefault("SPATIORA_CACHE_DIR", str(Path.home() / ".cache" / "spatiora"))
    config = write_modes(root, args.modes, args.steps, args.size)

    import ray
    from ray import serve

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    port = 8787
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    full = capacity(config, args.replicas, port)
    rate = args.load * full
    rng = random.Random(args.seed)
    at, plan = 0.0, []
    modes = [f"mode{i}" for i in range(args.modes)]
    for _ in range(args.requests):
        at += rng.expovariate(rate)
        plan.append((at, rng.choice(modes)))
    print(
        f"{args.replicas} replicas x 2 adapter sets, {args.modes} task modes (uniform), {args.requests} requests, "
        f"Poisson {rate:.2f}/s (load {args.load} of the {full:.2f}/s the replicas finish when kept busy; "
        f"{args.steps} steps {args.size}x{args.size} demo on CPU)",
        flush=True,
    )
    print("| routing | set loads / request | resident switches / request | p50 s | p95 s | requests/s | per replica |")
    print("|---|---|---|---|---|---|---|")
    for policy in args.policies.split(","):
        row = run_policy(policy, config, args.replicas, plan, port)
        print(
            f"| {row.policy} | {row.loads / row.requests:.2f} | {row.switches / row.requests:.2f} | {row.p50_s:.2f} | "
            f"{row.p95_s:.2f} | {row.throughput:.2f} | {'/'.join(map(str, row.per_replica))} |",
            flush=True,
        )
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
