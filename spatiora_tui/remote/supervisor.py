"""The user's engine's supervisor: `python -m spatiora_tui.remote.supervisor LOG ENDED -- ARGV...`
runs ARGV (the engine) with its output appended to LOG, waits for it, and writes how it ended to
ENDED (JSON: returncode, negative for a signal; the log's last line; when). A client whose link
to the engine drops reads it and says "killed by SIGKILL", not "the link dropped".

It imports nothing but the standard library: it costs a few MB and starts in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def last_line(log: Path, tail: int = 8192) -> str:
    """The last line of the log that says something."""
    try:
        with log.open("rb") as stream:
            stream.seek(max(0, log.stat().st_size - tail))
            lines = stream.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m spatiora_tui.remote.supervisor LOG ENDED -- ARGV...", file=sys.stderr)
        return 2
    log, ended, command = Path(argv[0]), Path(argv[1]), argv[3:]
    # Its own signals pass to the engine: `kill` of the supervisor stops the engine as `engine stop` does.
    with log.open("ab") as out:
        out.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting the engine: pid {os.getpid()} supervises\n".encode()
        )
        out.flush()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    code = child.wait()
    record = {"returncode": code, "last_line": last_line(log), "at": time.time(), "pid": child.pid}
    tmp = ended.with_name(ended.name + ".tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, ended)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
