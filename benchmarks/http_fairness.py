"""Three clients sharing one `spatiora serve --http` (a real uvicorn subprocess, the demo model):
Alice asks for a batch of 24 images at once, Bob and Carol for 8 each a moment later. Prints
each client's share of the images as they finish, its mean wait, and whether every job ran
exactly once.

    python -m benchmarks.http_fairness [--alice 24] [--others 8] [--steps 4] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alice", type=int, default=24)
    parser.add_argument("--others", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from spatiora_tui.config import Settings, TaskSettings, settings_to_toml
    from spatiora_tui.engine.api import GenerationRequest
    from spatiora_tui.remote.client import RemoteEngine
    from spatiora_tui.remote.websocket import websocket
    from tests.http_server import http_server

    root = Path(tempfile.mkdtemp(prefix="spatiora-fair-"))
    task = TaskSettings(
        name="base", prompt_template="{prompt}", scheduler="euler", steps=args.steps, width=args.size, height=args.size
    )
    config = root / "config.toml"
    config.write_text(settings_to_toml(Settings(tasks=(task,), base_dir=root)), encoding="utf-8")
    done: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    with http_server(config) as server:
        clients = {
            name: RemoteEngine(websocket(f"unix:{server.socket}"), name=name) for name in ("alice", "bob", "carol")
        }
        for engine in clients.values():
            engine.load()

        def one(name: str, seed: int, asked: float) -> None:
            result = clients[name].generate(GenerationRequest(prompt="a room", task="base", seed=seed))
            assert result.image is not None
            with lock:
                done.append((name, result.params.seed or 0, time.perf_counter() - asked))

        threads = []
        asked = time.perf_counter()
        for seed in range(args.alice):
            threads.append(threading.Thread(target=one, args=("alice", 1000 + seed, asked)))
        for thread in threads:
            thread.start()
        while len(clients["alice"].queue()) < args.alice:
            time.sleep(0.01)
        later = time.perf_counter()
        for name, base in (("bob", 2000), ("carol", 3000)):
            for seed in range(args.others):
                thread = threading.Thread(target=one, args=(name, base + seed, later))
                threads.append(thread)
                thread.start()
        for thread in threads:
            thread.join()
        for engine in clients.values():
            engine.close()

    total = args.alice + 2 * args.others
    seeds = sorted(seed for _, seed, _ in done)
    expected = sorted([1000 + i for i in range(args.alice)] + [b + i for b in (2000, 3000) for i in range(args.others)])
    print(f"{total} jobs, {len(done)} results; each job exactly once: {seeds == expected}")
    window = 3 * args.others
    first = [name for name, _, _ in done[:window]]
    print(
        f"share of the first {window} images: " + ", ".join(f"{n} {first.count(n)}" for n in ("alice", "bob", "carol"))
    )
    print("order: " + " ".join(name[0] for name, _, _ in done))
    for name in ("alice", "bob", "carol"):
        waits = [wait for who, _, wait in done if who == name]
        print(
            f"{name}: {len(waits)} images, first after {min(waits):.2f} s, mean wait {statistics.mean(waits):.2f} s, last at {max(waits):.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
