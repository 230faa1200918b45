"""Previews per second reached in the TUI, per real terminal: the app in each terminal of the CI
matrix under Xvfb (xterm -ti vt340, Debian's kitty 0.26, mlterm, tmux 3.5a built with sixel in
xterm, Debian's tmux 3.3a in xterm, and plain xterm), making images as a user would (a prompt
typed, ctrl+g pressed), with the method it chose for that terminal.

What reached the screen is read from the app's own output, recorded with `script` inside the
terminal: the preview pane's finished line says how many step previews were drawn and at what
rate ("previews drawn: 14 of 20 steps, 6.5/s"), and its title names the method; the bytes written per image
are the recording's size over the images made.

Run from the repository root (needs Xvfb, xterm, xdotool, kitty, mlterm, tmux; .ci/run installs
them):

    python -m benchmarks.terminal_previews [--images 3] [--model demo|random-512] [--engine user|inproc]
        [--only NAME]

`demo` is the shipped config's model (the trained demo, 64x64 images, latent2rgb previews);
`random-512` the random-weights demo at 512x512, 20 steps (noise-like frames: the worst case for
a sixel encoder). Prints one row per terminal; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.terminals import (  # noqa: E402
    RANDOM_MODEL,
    TERMINALS,
    app_command,
    make_project,
    pngs,
    sixel_tmux,
    tasks_config,
    xvfb_display,
)

MODELS = {
    "demo": (REPO / "config.toml").read_text(encoding="utf-8"),
    "random-512": '[ui]\nrenderer = "auto"\n\n' + RANDOM_MODEL + tasks_config(steps=20, size=512),
}
_GAP = rb"[\s\xe2\x94\x82]+"  # spaces, line ends and the pane's border, where a line wraps
FINISHED = re.compile(
    rb"image in ([\d.]+) s" + _GAP + rb"\xc2\xb7" + _GAP + rb"first preview [\d.]+ s" + _GAP + rb"\xc2\xb7" + _GAP
    + rb"seed (\d+)" + _GAP + rb"previews drawn: (\d+) of (\d+) steps, ([\d.]+)/s"
)  # fmt: skip
TITLE = re.compile(rb"Preview \xc2\xb7 [\w-]+ \xc2\xb7 ([\w-]+)")


def plain(data: bytes) -> bytes:
    """The recording without escape sequences (sixel and kitty images included), so text that
    Textual wrote in pieces reads whole."""
    data = re.sub(rb"\x1bP.*?\x1b\\\\|\x1b_.*?\x1b\\\\|\x1b\].*?(?:\x07|\x1b\\\\)", b"", data, flags=re.S)
    return re.sub(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMc]", b"", data)


def run_terminal(
    name: str, display: str, model: str, engine: str, images: int, work: Path, budget: float | None = None
) -> dict[str, object]:
    terminal = TERMINALS[name]
    (work / name / "run").mkdir(parents=True, mode=0o700)
    config = MODELS[model]
    if budget is not None:
        config = re.sub(r"preview_cpu_budget = \S+", f"preview_cpu_budget = {budget}", config)
        if "preview_cpu_budget" not in config:
            config = config.replace("[ui]\n", f"[ui]\npreview_cpu_budget = {budget}\n", 1)
    project = make_project(work / name, config)
    cache = work / "cache"
    recording = work / name / "out.bin"
    tmux = sixel_tmux() if terminal.tmux == "SIXEL" else terminal.tmux
    own = {
        "SPATIORA_ENGINE": engine,
        "XDG_RUNTIME_DIR": str(work / name / "run"),
        "SPATIORA_STATE_DIR": str(work / name / "state"),
    }
    app = app_command(project, cache, extra_env=own)
    command = "script -q -f -c " + shlex.quote(app) + " " + shlex.quote(str(recording))
    if tmux:
        socket = work / name / "tmux.sock"
        command = f"{shlex.quote(tmux)} -S {shlex.quote(str(socket))} -f /dev/null new-session {shlex.quote(command)}"
    env = {**os.environ, "DISPLAY": display, **terminal.env, **own}
    term = subprocess.Popen(
        [*terminal.argv, "sh", "-c", command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        window = subprocess.run(
            ["xdotool", "search", "--sync", "--onlyvisible", "--pid", str(term.pid)],
            env=env, capture_output=True, text=True, timeout=60,
        ).stdout.split()[0]  # fmt: skip
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, timeout=10)
        deadline = time.monotonic() + 120
        while b"model ready" not in plain(recording.read_bytes() if recording.exists() else b""):
            if time.monotonic() > deadline or term.poll() is not None:
                return {"error": "the model did not load"}
            time.sleep(0.5)
        subprocess.run(["xdotool", "type", "--delay", "20", "a sunlit loft"], env=env, timeout=30)
        for made in range(1, images + 1):  # one at a time: a queued job's start would paint over the line
            subprocess.run(["xdotool", "key", "ctrl+g"], env=env, timeout=10)
            deadline = time.monotonic() + 120
            while len(pngs(project)) < made:
                if time.monotonic() > deadline or term.poll() is not None:
                    return {"error": f"{len(pngs(project))} of {images} images made"}
                time.sleep(0.3)
            time.sleep(2.0)  # its finished line
        subprocess.run(["xdotool", "key", "ctrl+q"], env=env, timeout=10)
        term.wait(timeout=30)
    finally:
        if term.poll() is None:
            term.kill()
            term.wait()
        if engine == "user":  # the engine the app started outlives it: stopped here
            stop = app_command(project, cache, "engine", "stop", extra_env=own)
            subprocess.run(["sh", "-c", stop], env=env, capture_output=True, timeout=60)
    data = recording.read_bytes()
    text = plain(data)
    seen: dict[bytes, re.Match[bytes]] = {}
    for match in FINISHED.finditer(text):  # the line is written again on later repaints: one per seed
        seen.setdefault(match[2], match)
    rows = list(seen.values())
    methods = {m[1].decode() for m in TITLE.finditer(text)}
    return {
        "method": ",".join(sorted(methods)) or "?",
        "images": len(rows),
        "steps": statistics.median(int(m[4]) for m in rows) if rows else 0,
        "drawn": statistics.median(int(m[3]) for m in rows) if rows else 0,
        "per_s": statistics.median(float(m[5]) for m in rows) if rows else 0.0,
        "image_s": statistics.median(float(m[1]) for m in rows) if rows else 0.0,
        "kb_per_image": len(data) / 1024 / max(images, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--model", choices=list(MODELS), default="demo")
    parser.add_argument(
        "--engine", choices=["user", "inproc"], default="user", help="the user's engine (the default) or in the app"
    )
    parser.add_argument("--budget", type=float, help="[ui] preview_cpu_budget (default: the config's, auto)")
    parser.add_argument("--only", action="append", choices=list(TERMINALS), help="this terminal only (repeatable)")
    args = parser.parse_args()
    print(
        f"previews reached in the TUI: {args.model}, engine {args.engine}, "
        f"budget {args.budget if args.budget is not None else 'as configured'}, {args.images} images per terminal"
    )
    print(
        f"{'terminal':18} {'method':13} {'images':>6} {'steps':>5} {'drawn':>5} {'per s':>6} {'image s':>7} {'KB/image':>9}"
    )
    with xvfb_display() as display, tempfile.TemporaryDirectory(prefix="spatiora-terms-") as tmp:
        for name in args.only or list(TERMINALS):
            row = run_terminal(name, display, args.model, args.engine, args.images, Path(tmp), args.budget)
            if "error" in row:
                print(f"{name:18} {row['error']}")
                continue
            print(
                f"{name:18} {row['method']:13} {row['images']:>6} {row['steps']:>5} {row['drawn']:>5} "
                f"{row['per_s']:>6.1f} {row['image_s']:>7.2f} {row['kb_per_image']:>9.0f}"
            )


if __name__ == "__main__":
    main()
