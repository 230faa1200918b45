"""Key-to-screen latency as a person sees it: the app runs in tmux, keys go in with
`tmux send-keys`, and the time runs until `tmux capture-pane` shows the typed character.

Run from the repository root: `python -m benchmarks.terminal_latency [--keys 20] [--count 4]`. It
prints the median and worst latency while the app is idle and while a generation (or a batch of
--count images, drawn as a grid as they arrive) runs (the shipped config's first task on the
demo model). Polling capture-pane has a resolution of a few ms and
itself takes some CPU; the figures are upper bounds. Not part of the test suite: it reports,
it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = "spatiora-latency"
MARKS = "abcdefghijklmnopqrstuvwxyz"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def wait_for(text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in screen():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {text!r}; the screen was:\n{screen()}")
        time.sleep(0.05)


def prompt_text() -> str:
    """What the prompt field shows (its placeholder counts as empty)."""
    lines = screen().splitlines()
    for i, line in enumerate(lines):
        if "Prompt (Enter generates)" in line:
            text = lines[i + 1].split("│")[1].strip()
            return "" if text.startswith("what to draw") else text
    raise SystemExit("no prompt field on screen")


def field_text(label: str) -> str:
    """What the field under `label` shows, in the prompt pane's left column."""
    lines = screen().splitlines()
    for i, line in enumerate(lines):
        if label in line:
            return lines[i + 1].split("│")[1].split()[0] if lines[i + 1].split("│")[1].split() else ""
    raise SystemExit(f"no {label!r} field on screen")


def set_batch_count(count: int) -> None:
    """Tab from the prompt to the batch count field (prompt, negative, seed, steps, guidance,
    size, count), type `count`, check it is on screen, and Tab back. One key per send-keys,
    with a pause: Textual moves the focus once per Tab it has processed."""

    def keys(*names: str) -> None:
        for name in names:
            tmux("send-keys", "-t", SESSION, name)
            time.sleep(0.3)

    keys(*["Tab"] * 6, "BSpace", "BSpace", "BSpace")
    tmux("send-keys", "-t", SESSION, "-l", str(count))
    time.sleep(0.3)
    if field_text("Batch count") != str(count):
        raise SystemExit(f"could not set the batch count: the field shows {field_text('Batch count')!r}")
    keys(*["BTab"] * 6, "End")  # Tab into a field selects its text: End keeps it


def type_and_time(count: int, busy: bool) -> list[float]:
    latencies = []
    for i in range(count):
        if busy and "generating" not in screen():
            break
        mark = MARKS[i % len(MARKS)]
        before = prompt_text()
        start = time.perf_counter()
        tmux("send-keys", "-t", SESSION, "-l", mark)
        while True:
            shown = prompt_text()
            if shown.endswith(before[-20:] + mark):
                break
            if time.perf_counter() - start > 5:
                raise SystemExit(f"the key {mark!r} did not appear within 5 s: {shown!r}")
            time.sleep(0.002)
        latencies.append((time.perf_counter() - start) * 1000.0)
        time.sleep(0.1)
    return latencies


def report(label: str, values: list[float]) -> None:
    if values:
        print(f"{label}: median {statistics.median(values):.0f} ms, worst {max(values):.0f} ms over {len(values)} keys")
    else:
        print(f"{label}: no keys measured")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--count", type=int, default=1, help="batch count of each generation (default 1)")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed")
    spatiora = Path(sys.executable).with_name("spatiora")
    outputs = tempfile.mkdtemp(prefix="spatiora-latency-")
    # Its own state folder too: a run stopped half-way leaves its batch queued, which the next
    # start would offer to resume (in the user's real queue, and over the prompt it types into).
    env = f"SPATIORA_OUTPUT_DIR={outputs} SPATIORA_STATE_DIR={outputs}/state HF_HUB_OFFLINE=1"
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    tmux("new-session", "-d", "-s", SESSION, "-x", "160", "-y", "48", f"cd {os.getcwd()} && {env} {spatiora}")
    try:
        wait_for("model ready", 120)
        idle = type_and_time(args.keys, busy=False)
        if args.count > 1:
            set_batch_count(args.count)
        done = "contact sheet" if args.count > 1 else "saved"
        busy: list[float] = []
        while len(busy) < args.keys:
            tmux("send-keys", "-t", SESSION, "C-g")
            wait_for("generating", 10)
            busy += type_and_time(args.keys - len(busy), busy=True)
            wait_for(done, 120 * args.count)
        report("idle", idle)
        report("while generating" + (f" a batch of {args.count}" if args.count > 1 else ""), busy)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        shutil.rmtree(outputs, ignore_errors=True)


if __name__ == "__main__":
    main()
