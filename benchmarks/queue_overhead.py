"""The queue's cost: 10 jobs across two task modes run through a Session (queue file, events,
task switches between jobs with prefetch, saving) against the same requests run back to back by
the bare engine (generate + save), in one process, alternating rounds so that machine noise hits
both. Reports totals, the ratio and the task switches the queue's order caused.

Run: `python -m benchmarks.queue_overhead [--arch demo|sd15] [--size 128x128] [--steps 2] [--rounds 2]`.
It reports figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from spatiora_tui.config import load_settings, parse_size
from spatiora_tui.engine.api import GenerationRequest

#: The task of each of the 10 jobs, in the order submitted: runs of one task, as people queue.
ORDER = (0, 0, 1, 1, 1, 0, 0, 1, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="demo", choices=("demo", "sd15"))
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from spatiora_tui.bench.arch import engine_parts
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.jobs.session import Session
    from spatiora_tui.jobs.store import QueueStore
    from spatiora_tui.outputs import save_result

    base = load_settings()
    tasks = tuple(t.name for t in base.tasks[:2])
    with tempfile.TemporaryDirectory(prefix="spatiora-queue-") as tmp:
        root = Path(tmp)
        settings, loader = engine_parts(base, args.arch, tasks, args.steps, parse_size(args.size), root / "adapters")
        engine = LocalEngine(settings, loader=loader)
        engine.load()
        requests = [
            GenerationRequest(prompt=f"a flat, variation {i}", task=tasks[t], seed=100 + i) for i, t in enumerate(ORDER)
        ]
        engine.generate(requests[0])  # warm-up: first-run allocations and caches
        bare_s: list[float] = []
        queue_s: list[float] = []
        switches = 0

        def bare_run() -> None:
            engine.switch_task(tasks[1])  # both sides start from the same task
            t0 = time.perf_counter()
            for request in requests:
                save_result(engine.generate(request), root / "bare")
            bare_s.append(time.perf_counter() - t0)

        def queue_run() -> int:
            engine.switch_task(tasks[1])
            session = Session(engine, settings, store=QueueStore(root / "state"), output_dir=root / "queued")
            t0 = time.perf_counter()
            for request in requests:
                session.submit(request)
            assert session.wants_runner()
            while session.run_next():
                pass
            queue_s.append(time.perf_counter() - t0)
            session.close()
            return session.switches_between_jobs

        for round_no in range(args.rounds):
            # Which side goes first alternates: a round's first run pays for what the last left.
            if round_no % 2:
                switches = queue_run()
                bare_run()
            else:
                bare_run()
                switches = queue_run()
            print(f"round {round_no + 1}: bare {bare_s[-1]:.2f} s, queue {queue_s[-1]:.2f} s", flush=True)
        bare, queued = statistics.median(bare_s), statistics.median(queue_s)
        order = "".join("AB"[t] for t in ORDER)
        print(
            f"\n{args.arch} {args.size} {args.steps} steps, 10 jobs ({order}; A={tasks[0]}, B={tasks[1]}), "
            f"median of {args.rounds} rounds:"
        )
        print(f"  bare engine, back to back: {bare:.2f} s")
        print(f"  through the queue:        {queued:.2f} s")
        print(f"  ratio queue/bare:         {queued / bare:.3f}")
        print(f"  task switches the queue's order caused: {switches} (the bare run switches as often)")


if __name__ == "__main__":
    main()
