"""What the user's engine saves: `spatiora generate` as a command typed in a shell, timed from
process start to exit, with the model in the command's own process (`--engine inproc`, what every
command did before) against the user's engine started by the first command (cold) and found warm
by the next ones. Also the memory: each command's peak RSS, and the engine's.

Run: `python -m benchmarks.user_engine [--runs 3] [--steps 4] [--config config.toml]`

Every run uses its own runtime and state folders (the user's own engine is not touched) and
stops the engine it started. The figures report; they assert nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of the command's process, stderr) of one command."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss / 2**20)
        except psutil.Error:
            break
        time.sleep(0.02)
    _, err = proc.communicate()
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err}")
    return wall, peak, err


def engine_rss_mb(runtime: Path) -> float:
    record = json.loads((runtime / "spatiora" / "engine.json").read_text(encoding="utf-8"))
    return float(psutil.Process(record["pid"]).memory_info().rss) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm (and in-process) commands to time")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--config", default=str(REPO / "config.toml"))
    args = parser.parse_args()
    config = str(Path(args.config).resolve())
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as tmp:
        root = Path(tmp)
        runtime = root / "run"
        runtime.mkdir(mode=0o700)
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),
            "SPATIORA_STATE_DIR": str(root / "state"),
            "SPATIORA_OUTPUT_DIR": str(root / "out"),
        }
        env.pop("SPATIORA_ENGINE", None)
        spatiora = [sys.executable, "-m", "spatiora_tui", "--config", config]
        generate = [*spatiora, "generate", "--steps", str(args.steps), "--seed", "1", "a sunlit loft"]

        inproc = [run([*generate, "--engine", "inproc"], env, root) for _ in range(args.runs)]
        try:
            cold = run(generate, env, root)
            assert "starting your engine" in cold[2], cold[2]
            warm = [run(generate, env, root) for _ in range(args.runs)]
            assert not any("starting your engine" in w[2] for w in warm)
            engine_mb = engine_rss_mb(runtime)
        finally:
            subprocess.run([*spatiora, "engine", "stop"], env=env, cwd=root, capture_output=True)

    def row(name: str, runs: list[tuple[float, float, str]]) -> str:
        walls = [r[0] for r in runs]
        peaks = [r[1] for r in runs]
        return f"| {name} | {len(runs)} | {statistics.median(walls):.2f} | {min(walls):.2f}–{max(walls):.2f} | {statistics.median(peaks):.0f} |"

    print(f"`spatiora generate --steps {args.steps}`, process start to exit ({config})\n")
    print("| command | runs | median s | range s | its peak RSS MB |")
    print("|---|---|---|---|---|")
    print(row("--engine inproc (the model loaded in the command)", inproc))
    print(row("your engine, cold (the command starts it; model loaded)", [cold]))
    print(row("your engine, warm (model already loaded)", warm))
    ratio = statistics.median(r[0] for r in inproc) / statistics.median(r[0] for r in warm)
    print(f"\nwarm command {ratio:.1f}x faster than in-process; the engine holds {engine_mb:.0f} MB RSS once,")
    print(f"each warm command peaks at {statistics.median(r[1] for r in warm):.0f} MB (no torch in it)")


if __name__ == "__main__":
    main()
