"""Record a terminal's answers to Spatiora's start-up probe, for tests/unit/test_terminal.py.

Run it inside the terminal to record (it needs the terminal as stdin/stdout):

    python -m tools.record_terminal OUT.json

It writes the raw answer bytes (as a latin-1 string), the environment facts the choice uses, the
choice made and how long the answers took, then prints the choice.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import termios
import time
import tty
from pathlib import Path

from spatiora_tui.ui.terminal import choose, parse, place_from_environment, probe


def main() -> int:
    out = Path(sys.argv[1])
    place = place_from_environment()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd, termios.TCSANOW)
    start = time.perf_counter()
    try:
        raw = probe(fd, sys.stdout.fileno(), place)
    finally:
        elapsed_ms = (time.perf_counter() - start) * 1000
        termios.tcsetattr(fd, termios.TCSANOW, saved)
    choice = choose(parse(raw), place)
    record = {
        "raw": raw.decode("latin-1"),
        "place": dataclasses.asdict(place),
        "choice": dataclasses.asdict(choice),
        "probe_ms": round(elapsed_ms, 1),
    }
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"{choice.method}: {choice.reason}" + (f" ({choice.hint})" if choice.hint else ""))
    print(f"probe answered in {elapsed_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
