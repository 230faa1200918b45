"""The TUI's cost in a real terminal: image time with the app open in xterm, drawing sixel
previews at the pacer's rate, against the bare engine, with the engine in its own process (the
user's engine, the default) and in the app's process (`--engine inproc`), side by side.

Run from the repository root (needs Xvfb, xterm and xdotool):

    python -m benchmarks.tui_cost [--images 4] [--rounds 2] [--size 512] [--steps 20]

Each round runs three modes one after the other, so machine noise hits all three:
- bare: `spatiora generate --count N --engine inproc` (the engine, no UI);
- inproc: the TUI in `xterm -ti vt340` with `--engine inproc --renderer sixel`;
- apart: the same TUI on the user's engine (started, warm, before the round).
The TUI is asked for N images by pressing ctrl+g N times once its model is ready. Every image's
time is the engine's own figure, saved in its metadata (timings_ms.image_ms: denoising and the
decode, previews included): the UI's cost shows as the engine's slowdown. On the demo model
(random weights) at --size, which costs what a real model of its size costs per pixel in the
VAE and the previews but far less in the UNet, so the ratios are upper bounds for a real model.
Reports the median per mode and the ratio to bare; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("bare", "inproc", "apart")


def config_text(size: int, steps: int, preview: str = "latent2rgb", every: int = 1) -> str:
    return (
        '[model]\nsource = "demo-random"\n\n[ui]\nrenderer = "sixel"\n\n'
        f'[preview]\nmethod = "{preview}"\nevery_n_steps = {every}\n\n'
        f'[[tasks]]\nname = "interior"\nadapters = [{{name = "interior", weight = 0.8}}]\n'
        f'prompt_template = "interior photo of {{prompt}}"\nsteps = {steps}\nwidth = {size}\nheight = {size}\n'
    )


def image_times_ms(folder: Path) -> list[float]:
    from spatiora_tui.outputs import read_metadata

    times = []
    for path in sorted(folder.glob("*.png")):
        record = read_metadata(path).spatiora or {}
        value = (record.get("timings_ms") or {}).get("image_ms")
        if isinstance(value, (int, float)):
            times.append(float(value))
    return times


@contextlib.contextmanager
def display() -> Iterator[tuple[str, int]]:
    """An Xvfb display of its own, stopped after."""
    number = 90 + os.getpid() % 50
    name = f":{number}"
    server = subprocess.Popen(
        ["Xvfb", name, "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("Xvfb did not start")
            time.sleep(0.1)
        yield name, server.pid
    finally:
        server.terminate()
        server.wait(10)


def spatiora(project: Path, env: dict[str, str], *args: str, timeout: float = 600) -> None:
    command = [sys.executable, "-m", "spatiora_tui", "--config", str(project / "config.toml"), *args]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()[-800:]}")


def cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def in_xterm(
    project: Path,
    env: dict[str, str],
    out: Path,
    count: int,
    screen: tuple[str, int],
    timeout: float,
    engine_pid: int | None,
) -> dict[str, float]:
    """The TUI in xterm (sixel) on `screen`; ctrl+g until the first job is queued, then until
    `count` have been asked for; returns when `count` images are saved, with the CPU seconds
    each side used meanwhile: the TUI's process, the engine's (when apart), the terminal (xterm
    and the X server)."""
    import psutil

    command = [
        sys.executable,
        "-m",
        "spatiora_tui",
        "--config",
        str(project / "config.toml"),
        "--renderer",
        "sixel",
    ]
    xterm = subprocess.Popen(
        ["xterm", "-ti", "vt340", "-geometry", "160x48", "-fa", "Monospace", "-fs", "9", "-e", *command],
        cwd=project,
        env={**env, "DISPLAY": screen[0], "SPATIORA_OUTPUT_DIR": str(out)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    x = {**os.environ, "DISPLAY": screen[0]}
    try:
        found = subprocess.run(
            ["xdotool", "search", "--sync", "--onlyvisible", "--pid", str(xterm.pid)],
            env=x,
            capture_output=True,
            text=True,
            timeout=60,
        )
        window = found.stdout.split()[0]
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=x, timeout=10, check=False)

        def key(*names: str) -> None:  # to the focused window (xterm ignores sent events)
            subprocess.run(["xdotool", "key", *names], env=x, timeout=10, check=False)

        time.sleep(2)
        subprocess.run(["xdotool", "type", "--delay", "20", "a sunlit loft"], env=x, timeout=30, check=False)
        state = Path(env["SPATIORA_STATE_DIR"])
        queues = [state / "queues", state / "engine-queue"]  # the TUI's own, or its engine's
        deadline = time.monotonic() + timeout

        def saved() -> int:
            return len(list(out.glob("*.png")))

        while not (_queued(queues) or saved()):  # generate is refused until the model is ready
            if time.monotonic() > deadline:
                raise SystemExit("the TUI never took a generate")
            key("ctrl+g")
            time.sleep(1.0)
        tui = [p.pid for p in psutil.Process(xterm.pid).children(recursive=True) if "python" in p.name()]
        sides = {"TUI": tui, "engine": [engine_pid] if engine_pid else [], "terminal": [xterm.pid, screen[1]]}
        before = {side: cpu_s(pids) for side, pids in sides.items()}
        for _ in range(count - 1):
            key("ctrl+g")
            time.sleep(0.3)
        while saved() < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {saved()} of {count} images")
            time.sleep(0.2)
        used = {side: cpu_s(pids) - before[side] for side, pids in sides.items()}
        key("ctrl+q")
        xterm.wait(30)
        return used
    finally:
        if xterm.poll() is None:
            os.killpg(xterm.pid, signal.SIGKILL)
            xterm.wait(10)


def _queued(folders: list[Path]) -> int:
    """Jobs waiting or running in the queue files under `folders`."""
    total = 0
    for path in (path for folder in folders for path in folder.glob("queue-*.json")):
        with contextlib.suppress(OSError, ValueError):
            total += len(json.loads(path.read_text()).get("jobs") or [])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4, help="images per mode and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preview", default="latent2rgb", help="[preview] method (none: progress only)")
    parser.add_argument("--every", type=int, default=1, help="[preview] every_n_steps")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mode and round")
    args = parser.parse_args()
    for tool in ("Xvfb", "xterm", "xdotool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (apt-get install xvfb xterm xdotool)")
    root = Path(tempfile.mkdtemp(prefix="spatiora-tui-cost-"))
    project = root / "project"
    project.mkdir()
    (project / "config.toml").write_text(config_text(args.size, args.steps, args.preview, args.every), encoding="utf-8")
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "XDG_RUNTIME_DIR": str(runtime),
        "SPATIORA_STATE_DIR": str(root / "state"),
        "SPATIORA_CACHE_DIR": str(root / "cache"),
    }
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    try:
        # The demo model is built once (and cached) before anything is timed.
        spatiora(project, {**env, "SPATIORA_ENGINE": "inproc"}, "generate", "warm-up", "--out", str(root / "warm"))
        with display() as screen:
            for round_ in range(args.rounds):
                for mode in MODES:
                    out = root / f"{mode}-{round_}"
                    out.mkdir()
                    began = time.monotonic()
                    if mode == "bare":
                        children = resource.getrusage(resource.RUSAGE_CHILDREN)
                        spatiora(
                            project,
                            {**env, "SPATIORA_ENGINE": "inproc"},
                            "generate",
                            "a sunlit loft",
                            "--count",
                            str(args.images),
                            "--out",
                            str(out),
                            timeout=args.timeout,
                        )
                        after = resource.getrusage(resource.RUSAGE_CHILDREN)
                        spent = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
                        cpu[mode]["engine (the whole command)"] = cpu[mode].get("engine (the whole command)", 0.0) + (
                            spent / args.images
                        )
                    else:
                        state = root / "state"
                        shutil.rmtree(state / "queues", ignore_errors=True)
                        engine, engine_pid = "inproc", None
                        if mode == "apart":
                            engine = "user"
                            spatiora(project, {**env, "SPATIORA_ENGINE": "user"}, "engine", "start")
                            record = json.loads((runtime / "spatiora" / "engine.json").read_text(encoding="utf-8"))
                            engine_pid = int(record["pid"])
                        used = in_xterm(
                            project,
                            {**env, "SPATIORA_ENGINE": engine},
                            out,
                            args.images,
                            screen,
                            args.timeout,
                            engine_pid,
                        )
                        for side, seconds in used.items():
                            cpu[mode][side] = cpu[mode].get(side, 0.0) + seconds / args.images
                    got = image_times_ms(out)
                    times[mode] += got
                    print(
                        f"round {round_ + 1} {mode:<7} {len(got)} images, median {statistics.median(got):.0f} ms "
                        f"({time.monotonic() - began:.0f} s)",
                        flush=True,
                    )
    finally:
        subprocess.run(
            [sys.executable, "-m", "spatiora_tui", "engine", "stop"],
            cwd=project,
            env={**env, "SPATIORA_ENGINE": "user"},
            capture_output=True,
            check=False,
        )
    bare = statistics.median(times["bare"])
    print(f"\nimage time, demo model {args.size}x{args.size}, {args.steps} steps, sixel previews in xterm")
    print(f"{'mode':<8}{'images':>8}{'median ms':>12}{'x bare':>9}   CPU s per image (TUI, engine, xterm + X)")
    for mode in MODES:
        median = statistics.median(times[mode])
        sides = " · ".join(f"{side} {seconds / args.rounds:.2f}" for side, seconds in cpu[mode].items() if seconds)
        print(f"{mode:<8}{len(times[mode]):>8}{median:>12.0f}{median / bare:>9.3f}   {sides}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
