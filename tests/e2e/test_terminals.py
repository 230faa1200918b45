"""The app in real terminals, driven as a person drives it: tmux (half-cell fallback, keys through
tmux, nothing raw reaches the terminal from a pasted prompt), xterm with sixel under Xvfb (the
preview area holds an image, read from a screenshot), and over SSH (an sshd started on a loopback
port with throwaway keys). .ci/run installs tmux, xterm, Xvfb, xdotool, ImageMagick and
openssh-server."""

from __future__ import annotations

import colorsys
import json
import os
import shlex
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
from PIL import Image

from spatiora_tui.outputs import read_metadata
from tests.e2e.terminals import (
    E2E_CONFIG,
    TERMINALS,
    Tmux,
    app_command,
    make_project,
    pngs,
    require,
    sixel_tmux,
    tasks_config,
    xvfb_display,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Linux terminals")]


@pytest.fixture
def tmux(tmp_path: Path):
    session = Tmux(tmp_path)
    yield session
    session.close()


def test_tmux_halfcell_keys_and_no_raw_escape_from_a_paste(tmux: Tmux, tmp_path: Path, cache_dir: Path) -> None:
    project = make_project(tmp_path)
    raw = tmp_path / "pane-output.bin"
    tmux.start_recorded(app_command(project, cache_dir), raw)
    tmux.wait_for("model ready", timeout=120)

    # A pasted prompt carrying a terminal title sequence and a screen clear. (Textual ends a
    # bracketed paste at its first ESC and reads the rest as keys, showing ESC as "^["; either
    # way no ESC may stay in the prompt, reach the image, or reach the terminal.)
    tmux.paste("a loft\x1b]0;PWNED\x1b\\ with\x1b[2J oak")
    tmux.wait_for("PWNED")
    tmux.keys("C-g")
    shown = tmux.wait_for("saved ", timeout=120)
    assert shown.count("▀") > 200, "the preview is drawn in half-cell blocks inside tmux"
    [first] = pngs(project)
    prompt = read_metadata(first).spatiora["request"]["prompt"]
    assert "PWNED" in prompt and "a loft" in prompt and "\x1b" not in prompt

    tmux.keys("C-t")
    tmux.wait_for("task floorplan")
    tmux.keys("C-g")
    deadline = time.monotonic() + 120
    while len(pngs(project)) < 2:
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.2)
    tasks = sorted(read_metadata(p).spatiora["request"]["task"] for p in pngs(project))
    assert tasks == ["floorplan", "interior"]

    tmux.keys("C-o")
    tmux.wait_for("View large")
    tmux.keys("Escape")
    tmux.keys("C-q")
    tmux.wait_for("__EXITED__ 0", timeout=30)

    output = raw.read_bytes()
    assert len(output) > 10_000, "the pane's output was recorded"
    assert b"\x1b]0;PWNED" not in output and b"\x1b[2J oak" not in output
    assert "PWNED" not in tmux.title()


# -- xterm with sixel ----------------------------------------------------------------------------


def image_tiles(shot: Path, tile: int = 16) -> list[tuple[int, int]]:
    """The tile x tile squares of a screenshot that look like a picture: at least 10 distinct
    colours over at least 3 hues. Text is one foreground hue on a background (its antialiasing
    adds shades, not hues); half-cell blocks are a few flat colours per cell; the demo model's
    noise, drawn as a sixel image, is many colours of many hues in every square."""
    image = Image.open(shot).convert("RGB")
    found = []
    for top in range(0, image.height - tile, tile):
        for left in range(0, image.width - tile, tile):
            colours = image.crop((left, top, left + tile, top + tile)).getcolors(tile * tile) or []
            hues = set()
            for _, colour in colours:
                r, g, b = typing.cast(tuple[int, int, int], colour)
                h, sat, val = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
                if sat > 0.25 and val > 0.2:
                    hues.add(int(h * 12) % 12)
            if len(colours) >= 10 and len(hues) >= 3:
                found.append((left, top))
    return found


def largest_cluster(tiles: list[tuple[int, int]], tile: int) -> list[tuple[int, int]]:
    """The tiles of the largest group of touching ones: the picture, without the odd square of
    coloured text elsewhere (the footer's keys above tmux's status bar)."""
    left = set(tiles)
    best: list[tuple[int, int]] = []
    while left:
        group, todo = [], [left.pop()]
        while todo:
            x, y = todo.pop()
            group.append((x, y))
            for dx in (-tile, 0, tile):
                for dy in (-tile, 0, tile):
                    if (x + dx, y + dy) in left:
                        left.remove((x + dx, y + dy))
                        todo.append((x + dx, y + dy))
        best = max(best, group, key=len)
    return sorted(best)


def resemblance(shot: Path, png: Path, tiles: list[tuple[int, int]], tile: int = 16) -> tuple[float, list[float]]:
    """How much the picture on screen (the tiles' box, trimmed) looks like `png`: the correlation
    of the two at 12 columns, and, as controls, of the screen with `png` mirrored, flipped and
    turned."""
    import numpy as np

    xs, ys = [x for x, _ in tiles], [y for _, y in tiles]
    whole = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    left, top, right, bottom = min(xs), min(ys), max(xs) + tile, max(ys) + tile
    # The squares overhang the picture by up to a square: trim edge rows and columns that are
    # mostly the colour just outside (the pane's background).
    outside = whole[max(0, top - 4), left:right]
    background = outside[np.abs(outside - outside.mean(axis=0)).sum(axis=1).argmin()]

    def mostly_background(pixels: np.ndarray) -> bool:
        return bool((np.abs(pixels - background).sum(axis=-1) < 40).mean() > 0.5)

    while bottom - top > tile and mostly_background(whole[top, left:right]):
        top += 1
    while bottom - top > tile and mostly_background(whole[bottom - 1, left:right]):
        bottom -= 1
    while right - left > tile and mostly_background(whole[top:bottom, left]):
        left += 1
    while right - left > tile and mostly_background(whole[top:bottom, right - 1]):
        right -= 1
    small = (12, max(3, round(12 * (bottom - top) / (right - left))))  # the picture's shape
    screen = np.asarray(
        Image.fromarray(whole[top:bottom, left:right].astype(np.uint8)).resize(small, Image.Resampling.BOX), dtype=float
    )
    saved = Image.open(png).convert("RGB")

    def correlation(image: Image.Image) -> float:
        a = screen - screen.mean()
        b = np.asarray(image.resize(small, Image.Resampling.BOX), dtype=float)
        b = b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    turns = (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_90)
    return correlation(saved), [correlation(saved.transpose(turn)) for turn in turns]


def changed_fraction(a: Path, b: Path, top: int, bottom: int) -> float:
    """The share of pixels that differ between two screenshots in rows top..bottom."""
    import numpy as np

    first, second = (np.asarray(Image.open(p).convert("RGB"), dtype=int)[max(0, top) : bottom] for p in (a, b))
    return float((np.abs(first - second).sum(axis=2) > 24).mean())


def queued_jobs(state: Path) -> int:
    """Jobs in the app's queue files (a job stays in its file until it is done)."""
    count = 0
    for path in state.glob("queues/queue-*.json"):
        try:
            count += len(json.loads(path.read_text(encoding="utf-8")).get("jobs", []))
        except (OSError, ValueError):
            continue  # being rewritten
    return count


@pytest.fixture
def xvfb(tmp_path: Path):
    require("Xvfb", "xterm", "xdotool", "import")
    with xvfb_display() as display:
        yield display


@pytest.mark.parametrize("name", list(TERMINALS))
def test_real_terminal_preview_area_holds_an_image(name: str, xvfb: str, tmp_path: Path, cache_dir: Path) -> None:
    """Generate in a real terminal; the screenshot's preview column holds the picture (never a
    grid of empty boxes, as kitty 0.26 drew textual-image's placeholders)."""
    terminal = TERMINALS[name]
    tmux = sixel_tmux() if terminal.tmux == "SIXEL" else terminal.tmux
    require(terminal.argv[0], *([tmux] if tmux else []))
    # A wide image: its last row on the main screen is a row of text on the history screen.
    project = make_project(tmp_path, E2E_CONFIG.replace(tasks_config(16, 128), tasks_config(16, 256, 128)))
    env = {**os.environ, "DISPLAY": xvfb, **terminal.env}
    command = app_command(project, cache_dir)
    socket = tmp_path / "tmux.sock"
    if tmux:
        if tmux == "tmux" and terminal.tmux == "tmux":
            version = subprocess.run(["tmux", "-V"], capture_output=True, text=True, timeout=10).stdout
            if not version.startswith("tmux 3.3"):
                pytest.skip(f"the half-cell case is tmux 3.3's; this is {version.strip()}")
        command = f"{shlex.quote(tmux)} -S {shlex.quote(str(socket))} -f /dev/null new-session {shlex.quote(command)}"
    term = subprocess.Popen(
        [*terminal.argv, "sh", "-c", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        window = subprocess.run(
            ["xdotool", "search", "--sync", "--onlyvisible", "--pid", str(term.pid)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()[0]
        subprocess.run(["xdotool", "windowactivate", "--sync", window], env=env, timeout=10, check=False)
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, timeout=10)
        shot = tmp_path / f"{name}.png"
        before = tmp_path / "before.png"
        time.sleep(2.0)
        subprocess.run(["import", "-window", "root", str(before)], env=env, check=True, timeout=30)
        assert len(image_tiles(before)) < 8, "no picture on screen before generating"
        subprocess.run(["xdotool", "type", "--delay", "20", "a sunlit loft"], env=env, timeout=30)
        # The model loads in the background; ctrl+g says "still loading" until it is ready. It is
        # pressed until one job is queued: more would leave a later job's first, blurry preview on
        # screen when the shot is taken (on a loaded machine an image takes longer than a press).
        deadline = time.monotonic() + 120
        while not queued_jobs(tmp_path / "state") and not pngs(project):
            assert time.monotonic() < deadline and term.poll() is None, "no job was queued"
            subprocess.run(["xdotool", "key", "ctrl+g"], env=env, timeout=10)
            time.sleep(3.0)
        while not pngs(project):
            assert time.monotonic() < deadline and term.poll() is None, "no image was saved"
            time.sleep(0.5)
        # The final image is drawn after the save: on a loaded machine that can take seconds, so
        # the screen is read again until it shows or a generous deadline passes. The preview box
        # is about 500x250 pixels here: hundreds of 16-pixel squares.
        # Until then the last step's preview (latent2rgb, not the decoded image) may be what shows.
        wanted = 200 * 16 * 16 // terminal.tile**2
        [png] = pngs(project)
        # The screen is taken as settled when two shots in a row agree around the picture: the
        # history-screen check below compares against it.
        same, others = 0.0, [1.0]
        previous = tmp_path / "previous.png"
        deadline = time.monotonic() + 30
        while True:
            time.sleep(1.5)
            if shot.exists():
                shot.replace(previous)
            subprocess.run(["import", "-window", "root", str(shot)], env=env, check=True, timeout=30)
            tiles = largest_cluster(image_tiles(shot, terminal.tile), terminal.tile)
            if len(tiles) >= wanted:
                same, others = resemblance(shot, png, tiles, terminal.tile)
                top, bottom = min(y for _, y in tiles), max(y for _, y in tiles) + 16
                settled = previous.exists() and changed_fraction(previous, shot, top - 40, bottom + 40) < 0.01
                if same >= 0.6 and same > max(others) + 0.3 and settled:
                    break
            if time.monotonic() > deadline:
                break
        assert len(tiles) >= wanted, f"the preview area holds no image ({len(tiles)} picture-like squares; {shot})"
        xs = [x for x, _ in tiles]
        assert max(xs) - min(xs) >= 200 and min(xs) > 200, "one picture, in the middle (preview) column"
        assert same >= 0.6 and same > max(others) + 0.3, f"the picture is not the saved PNG ({same=:.2f}, {others=})"

        # The history screen and back: the main screen is as it was. (In xterm the rest of the
        # image's last screen row once landed a row lower, and the history screen's text and
        # scrollbar stayed beside the image.)
        bottom = max(y for _, y in tiles) + 16
        subprocess.run(["xdotool", "key", "ctrl+o"], env=env, timeout=10)
        time.sleep(3.0)
        subprocess.run(["xdotool", "key", "Escape"], env=env, timeout=10)
        back = tmp_path / f"{name}-back.png"
        deadline = time.monotonic() + 30
        while True:
            time.sleep(1.5)
            subprocess.run(["import", "-window", "root", str(back)], env=env, check=True, timeout=30)
            changed = changed_fraction(shot, back, bottom - 40, bottom + 40)
            if changed < 0.01 or time.monotonic() > deadline:
                break
        assert changed < 0.01, (
            f"after the history screen {changed:.1%} of the rows around the image's end differ ({back})"
        )
        if tmux:  # the title names the method the probe chose inside tmux
            pane = subprocess.run(
                [tmux, "-S", str(socket), "capture-pane", "-p"], capture_output=True, text=True, timeout=30
            ).stdout
            assert f"latent2rgb · {terminal.method}" in pane, pane
        subprocess.run(["xdotool", "key", "ctrl+q"], env=env, timeout=10)
        assert term.wait(timeout=30) == 0
    finally:
        if term.poll() is None:
            term.kill()
        if tmux:
            subprocess.run([tmux, "-S", str(socket), "kill-server"], capture_output=True, timeout=30)


# -- over SSH ------------------------------------------------------------------------------------


def ssh_command(port: int, key: Path, remote: str) -> list[str]:
    """ssh with a terminal to this machine's test sshd, as the current user, running `remote`."""
    from tests.e2e.sshd import ssh_argv

    return [*ssh_argv(port, key, terminal=True), remote]


def test_over_ssh_the_app_runs_in_the_remote_session_and_generates(
    sshd, tmux: Tmux, tmp_path: Path, cache_dir: Path
) -> None:
    port, key = sshd
    project = make_project(tmp_path)
    tmux.start(shlex.join(ssh_command(port, key, app_command(project, cache_dir))))
    tmux.wait_for("model ready", timeout=120)
    tmux.type("a house plan over ssh")
    tmux.keys("C-g")
    tmux.wait_for("saved ", timeout=120)
    [image] = pngs(project)
    assert read_metadata(image).spatiora["request"]["prompt"] == "a house plan over ssh"
    tmux.keys("C-q")
    tmux.wait_for("__EXITED__ 0", timeout=30)


def test_a_dropped_ssh_connection_ends_the_remote_app(sshd, tmux: Tmux, tmp_path: Path, cache_dir: Path) -> None:
    """The connection drops mid-generation: the app on the remote side must not run on (holding
    the GPU and the model in memory) with nobody to see it."""
    import psutil

    port, key = sshd
    project = make_project(tmp_path)
    tmux.start(shlex.join(ssh_command(port, key, app_command(project, cache_dir))))
    tmux.wait_for("model ready", timeout=120)
    marker = str(project / "outputs")
    remote = [
        p
        for p in psutil.process_iter(["cmdline", "environ"])
        if "spatiora_tui" in " ".join(p.info["cmdline"] or [])
        and (p.info["environ"] or {}).get("SPATIORA_OUTPUT_DIR") == marker
    ]
    assert len(remote) == 1, remote
    client = [
        p
        for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or [])[:2] == ["ssh", "-tt"]
        and app_command(project, cache_dir) in (p.info["cmdline"] or [])
    ]
    assert len(client) == 1
    tmux.type("a long one")
    tmux.keys("C-g")
    client[0].kill()  # the network goes away
    gone, alive = psutil.wait_procs(remote, timeout=20)
    assert not alive, "the remote app still runs after its SSH connection dropped"
