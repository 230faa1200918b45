"""What a dropped SSH link costs a batch: `spatiora generate --count N` typed in an SSH session
(a real sshd on loopback), the ssh client killed once image K is saved, then a new login.

Two rows: the user's engine (the batch lives in the engine's queue) and `--engine inproc` (the
batch lives in the command's process, as every batch did before the engine kept the queue).
Each row: images saved in the end, duplicates, seconds for the new login's `spatiora queue` to
answer (the reattach), and seconds from the kill until the last image was saved.

Run: `python -m benchmarks.ssh_drop [--count 8] [--kill-after 2] [--steps 12] [--size 64]`

Needs sshd, ssh and ssh-keygen. Every run uses its own runtime, state and output folders and
stops the engine it started. The figures report; they assert nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def config_text(steps: int, size: int) -> str:
    """The demo model with two tasks of `steps` steps at size x size."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.terminals import RANDOM_MODEL, tasks_config

    return RANDOM_MODEL + tasks_config(steps=steps, size=size)


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if not p.stem.endswith("-batch")) if folder.exists() else []


def one_row(engine: str, args: argparse.Namespace, ssh: list[str], root: Path) -> dict[str, object]:
    project = root / engine
    project.mkdir()
    (project / "config.toml").write_text(config_text(args.steps, args.size), encoding="utf-8")
    runtime = Path(tempfile.mkdtemp(prefix="sp-ssh-"))  # short: a socket's path is at most 107 bytes
    env = {
        "XDG_RUNTIME_DIR": str(runtime),
        "SPATIORA_STATE_DIR": str(project / "state"),
        "SPATIORA_CACHE_DIR": str(args.cache),
        "SPATIORA_OUTPUT_DIR": str(project / "out"),
        "HF_HUB_OFFLINE": "1",
        "SPATIORA_ENGINE": engine,
        "PYTHONPATH": str(REPO),
    }
    there = f"cd {shlex.quote(str(project))} && env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    spatiora = f"{there} {shlex.quote(sys.executable)} -m spatiora_tui"
    out = project / "batch"
    command = f"{spatiora} generate 'a sunlit loft' --count {args.count} --out {shlex.quote(str(out))}"
    login = subprocess.Popen(
        [*ssh, command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert login.stderr is not None
        for _line in login.stderr:  # until the images are on disk
            if len(images(out)) >= args.kill_after:
                break
        login.kill()
        killed = time.monotonic()
        login.wait()
        began = time.perf_counter()
        listed = subprocess.run([*ssh, f"{spatiora} queue"], capture_output=True, text=True, timeout=300)
        reattach_s = time.perf_counter() - began
        deadline = time.monotonic() + args.wait
        last = len(images(out))
        last_at = time.monotonic()
        while time.monotonic() < deadline and last < args.count:
            time.sleep(0.2)
            now = len(images(out))
            if now != last:
                last, last_at = now, time.monotonic()
        saved = images(out)
        seeds = [p.stem.rsplit("-", 1)[1] for p in saved]
        return {
            "engine": engine,
            "saved": len(saved),
            "duplicates": len(seeds) - len(set(seeds)),
            "reattach_s": reattach_s,
            "listed": sum(f"/{args.count} · seed" in line for line in listed.stdout.splitlines()),
            "last_image_s": last_at - killed if len(saved) > args.kill_after else None,
        }
    finally:
        if login.poll() is None:
            login.kill()
        subprocess.run([*ssh, f"{spatiora} engine stop"], capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--kill-after", type=int, default=2, help="kill the ssh client once this many are saved")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the rest after the kill")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (the demo model's build)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.e2e.sshd import running_sshd, ssh_argv

    with tempfile.TemporaryDirectory(prefix="sp-bench-ssh-") as tmp:
        root = Path(tmp)
        args.cache = args.cache or root / "cache"
        with running_sshd(root / "ssh") as (port, key):
            ssh = ssh_argv(port, key)
            rows = [one_row(engine, args, ssh, root) for engine in ("user", "inproc")]
    print(
        f"batch of {args.count} ({args.size}x{args.size}, {args.steps} steps) typed over ssh; "
        f"ssh client killed after image {args.kill_after}; host {os.uname().nodename}, {os.cpu_count()} CPUs"
    )
    print(f"{'engine':<8} {'saved':>7} {'dupl.':>6} {'listed':>7} {'reattach s':>11} {'last image s':>13}")
    for row in rows:
        last = row["last_image_s"]
        print(
            f"{row['engine']:<8} {row['saved']!s:>3} of {args.count:<2} {row['duplicates']!s:>6} {row['listed']!s:>7} "
            f"{row['reattach_s']:>11.2f} {'-' if last is None else f'{last:.1f}':>13}"
        )


if __name__ == "__main__":
    main()
