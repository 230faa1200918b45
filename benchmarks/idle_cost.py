"""CPU the app costs while it waits for the user: Spatiora at rest beside a bare Textual app.

Each app runs in a child process on a real pseudo-terminal (160x48, drained by this process, as a
terminal would), one after the other. After --settle seconds (the demo model loaded, nothing
generating) the child's threads are read from /proc for --seconds: CPU time per thread, as % of
one core, named from inside the child (threading.enumerate). The bare app is Header, Input,
Static and Footer, Textual's own idle cost.

    python benchmarks/idle_cost.py                 # both, 20 s each after 20 s to settle
    python benchmarks/idle_cost.py --only spatiora --seconds 30

Linux only (/proc). It reports, it asserts nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TICKS = os.sysconf("SC_CLK_TCK")


def bare_app():
    from textual.app import App, ComposeResult
    from textual.widgets import Footer, Header, Input, Static

    class Bare(App):
        def compose(self) -> ComposeResult:
            yield Header()
            yield Input(placeholder="prompt")
            yield Static("a bare Textual app")
            yield Footer()

    return Bare()


def spatiora_app():
    from spatiora_tui.config import load_settings
    from spatiora_tui.engine.local import LocalEngine
    from spatiora_tui.hw import Telemetry
    from spatiora_tui.ui.app import SpatioraApp

    settings = load_settings(REPO / "config.toml")
    telemetry = Telemetry.from_settings(settings)
    return SpatioraApp(settings, LocalEngine(settings, telemetry=telemetry), telemetry=telemetry)


def child(which: str, names_file: str, settle: float) -> None:
    app = spatiora_app() if which == "spatiora" else bare_app()

    def report() -> None:
        time.sleep(settle)
        names = {t.native_id: t.name for t in threading.enumerate()}
        names[os.getpid()] = "main (UI)"  # the main thread's id is the process id
        Path(names_file).write_text(json.dumps(names))

    threading.Thread(target=report, name="idle-cost-report", daemon=True).start()
    app.run()


def thread_ticks(pid: int) -> dict[int, int]:
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def measure(which: str, settle: float, seconds: float) -> dict[str, float]:
    names_file = tempfile.mktemp(prefix="idle-cost-", suffix=".json")
    pid, fd = os.forkpty()
    if pid == 0:
        os.environ.setdefault("TERM", "xterm-256color")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            child(which, names_file, settle)
        finally:
            os._exit(0)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
    os.kill(pid, signal.SIGWINCH)
    stop = threading.Event()

    def drain() -> None:  # a terminal reads what the app writes
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    os.read(fd, 65536)
                except OSError:
                    return

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + settle + 120
    while not os.path.exists(names_file):
        if time.monotonic() > deadline:
            raise SystemExit(f"{which}: no report from the child")
        time.sleep(0.2)
    time.sleep(0.5)
    before, t0 = thread_ticks(pid), time.monotonic()
    time.sleep(seconds)
    after, t1 = thread_ticks(pid), time.monotonic()
    names = {int(k): v for k, v in json.loads(Path(names_file).read_text()).items()}
    os.kill(pid, signal.SIGTERM)
    stop.set()
    os.waitpid(pid, 0)
    os.unlink(names_file)
    usage: dict[str, float] = {}
    for tid, end in after.items():
        used = (end - before.get(tid, 0)) / TICKS / (t1 - t0) * 100
        name = names.get(tid, "native (torch/OpenMP)")
        usage[name] = usage.get(name, 0.0) + used
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", choices=["spatiora", "bare"])
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    results = {}
    for which in ("bare", "spatiora"):
        if args.only and which != args.only:
            continue
        usage = measure(which, args.settle, args.seconds)
        results[which] = usage
        print(f"\n{which}: {sum(usage.values()):.1f}% of one core at rest ({args.seconds:g} s)")
        for name, pct in sorted(usage.items(), key=lambda kv: -kv[1]):
            if pct >= 0.05:
                print(f"  {pct:6.1f}%  {name}")
    if len(results) == 2:
        extra = sum(results["spatiora"].values()) - sum(results["bare"].values())
        print(f"\nspatiora - bare: {extra:+.1f}% of one core")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
