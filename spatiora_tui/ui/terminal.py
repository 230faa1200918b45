"""What the terminal can draw: asked once at start-up, and the drawing method chosen from it.

The probe writes its questions in one burst and reads until the answer to the last of them,
primary device attributes (DA1), which every terminal answers: answers come back in order, so
by then every terminal that answers the others has. The wait is capped (`PROBE_TIMEOUT_S`) so a
slow or silent link costs at most that at start-up.

- XTVERSION (CSI > q): the terminal's name and version ("kitty(0.26.5)", "XTerm(379)").
- The kitty graphics query (an APC sequence): kitty, Ghostty, WezTerm and Konsole answer OK.
  Not sent where it would show: inside tmux or GNU screen (tmux 3.3 made the APC its pane
  title), or on the Linux console.
- XTSMGRAPHICS: the sixel colour registers and the largest sixel image.
- CSI 16 t: a cell's size in pixels (for sizing images).
- DA1 (CSI c): attribute 4 is sixel.

`choose` turns the answers and the environment (TERM_PROGRAM, tmux's own settings) into a
method with its reason and, where images would be possible with a setting, what to set. It is a
pure function: tests/unit/test_terminal.py feeds it the recorded answers of real terminals.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass

#: Longest wait for the terminal's answers at start-up.
PROBE_TIMEOUT_S = 1.0

XTVERSION = b"\x1b[>q"
KITTY_QUERY = b"\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"
SIXEL_COLORS = b"\x1b[?1;1;0S"
SIXEL_GEOMETRY = b"\x1b[?2;1;0S"
CELL_SIZE = b"\x1b[16t"
DA1 = b"\x1b[c"

_DA1_ANSWER = re.compile(rb"\x1b\[\?([\d;]*)c")
_XTVERSION_ANSWER = re.compile(rb"\x1bP>\|(.*?)\x1b\\")
_KITTY_ANSWER = re.compile(rb"\x1b_G([^;\x1b]*);([^\x1b]*)\x1b\\")
_XTSMGRAPHICS_ANSWER = re.compile(rb"\x1b\[\?(\d+);(\d+)((?:;\d+)*)S")
_CELL_ANSWER = re.compile(rb"\x1b\[6;(\d+);(\d+)t")


@dataclass(frozen=True)
class Answers:
    """What a terminal said to the probe."""

    version: str = ""  # XTVERSION's text: "kitty(0.26.5)", "XTerm(379)", "tmux 3.4", "WezTerm 20240203-..."
    attributes: tuple[int, ...] = ()  # DA1's parameters
    kitty_graphics: bool = False  # answered OK to the kitty graphics query
    sixel_colors: int | None = None
    sixel_max: tuple[int, int] | None = None  # width, height in pixels
    cell: tuple[int, int] | None = None  # width, height in pixels
    complete: bool = False  # DA1 answered: everything the terminal would say, it said

    @property
    def sixel(self) -> bool:
        # The first parameter is the terminal's class (62 = VT220 ...); 4 among the rest is sixel.
        return 4 in self.attributes[1:]


def parse(raw: bytes) -> Answers:
    """The answers in `raw`, the bytes a terminal sent back (in any order, with anything else)."""
    da1 = _DA1_ANSWER.search(raw)
    version = _XTVERSION_ANSWER.search(raw)
    kitty = _KITTY_ANSWER.search(raw)
    colors = geometry = None
    for item, status, values in _XTSMGRAPHICS_ANSWER.findall(raw):
        numbers = [int(v) for v in values.split(b";") if v]
        if status != b"0" or not numbers:
            continue
        if item == b"1":
            colors = numbers[0]
        elif item == b"2" and len(numbers) >= 2:
            geometry = (numbers[0], numbers[1])
    cell = _CELL_ANSWER.search(raw)
    return Answers(
        version=version.group(1).decode("utf-8", "replace").strip() if version else "",
        attributes=tuple(int(p) for p in da1.group(1).split(b";") if p) if da1 else (),
        kitty_graphics=bool(kitty) and kitty.group(2) == b"OK",  # type: ignore[union-attr]
        sixel_colors=colors,
        sixel_max=geometry,
        cell=(int(cell.group(2)), int(cell.group(1))) if cell and int(cell.group(1)) and int(cell.group(2)) else None,
        complete=da1 is not None,
    )


@dataclass(frozen=True)
class Place:
    """Where the app runs, from its environment: the terminal's own variables and, inside tmux,
    tmux's settings and the outer terminal tmux reports."""

    term: str = ""
    term_program: str = ""  # TERM_PROGRAM: "iTerm.app", "WezTerm", "vscode", "ghostty", "tmux"
    term_program_version: str = ""
    tmux: bool = False
    tmux_version: str = ""  # "3.3a"
    passthrough: str = ""  # tmux's allow-passthrough: "on", "all", "off" ("" = unknown)
    outer: str = ""  # the terminal outside tmux, as tmux knows it (client_termtype): "kitty(0.35.2)"
    screen: bool = False  # GNU screen

    @property
    def kitty_query_safe(self) -> bool:
        """Whether the APC kitty query can be sent without showing on screen or in a title."""
        return not (self.tmux or self.screen or self.term == "linux")


def place_from_environment(env: dict[str, str] | None = None) -> Place:
    """The Place of this process; inside tmux, asks tmux (`tmux display`, `show`)."""
    env = dict(os.environ if env is None else env)
    tmux = bool(env.get("TMUX"))
    tmux_version = passthrough = outer = ""
    if tmux and shutil.which("tmux"):
        tmux_version = _tmux("display", "-p", "#{version}")
        outer = _tmux("display", "-p", "#{client_termtype}")
        passthrough = _tmux("show", "-Apv", "allow-passthrough") or _tmux("show", "-gv", "allow-passthrough")
    return Place(
        term=env.get("TERM", ""),
        term_program=env.get("TERM_PROGRAM", ""),
        term_program_version=env.get("TERM_PROGRAM_VERSION", ""),
        tmux=tmux,
        tmux_version=tmux_version,
        passthrough=passthrough,
        outer=outer,
        screen=bool(env.get("STY")) and not tmux,
    )


def _tmux(*args: str) -> str:
    try:
        done = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def probe(fd_in: int, fd_out: int, place: Place, timeout: float = PROBE_TIMEOUT_S) -> bytes:
    """Ask the terminal on `fd_out` and read its answers from `fd_in` (a tty in cbreak mode,
    which the caller sets), until DA1's answer or `timeout`. Returns the raw bytes read."""
    queries = [XTVERSION, SIXEL_COLORS, SIXEL_GEOMETRY, CELL_SIZE]
    if place.kitty_query_safe:
        queries.insert(1, KITTY_QUERY)
    os.write(fd_out, b"".join([*queries, DA1]))
    got = b""
    deadline = time.monotonic() + timeout
    while not _DA1_ANSWER.search(got):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd_in], [], [], left)
        if not ready:
            break
        chunk = os.read(fd_in, 4096)
        if not chunk:
            break
        got += chunk
    return got


# -- the choice ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """How images are drawn, why, and what would draw them better (empty when nothing would)."""

    method: str  # sixel | kitty | kitty-direct | iterm | halfcell | unicode
    reason: str
    hint: str = ""
    tmux_passthrough: bool = False  # kitty sequences wrapped for tmux's passthrough


def _version_numbers(text: str) -> tuple[int, ...]:
    found = re.search(r"(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in found.group(1).split(".")) if found else ()


def terminal_name(answers: Answers, place: Place) -> str:
    """A person's name for the terminal: "kitty 0.26.5", "XTerm 379", "WezTerm"."""
    text = answers.version
    if text:
        name = re.split(r"[\s(]", text, maxsplit=1)[0]
        numbers = _version_numbers(text[len(name) :])
        return f"{name} {'.'.join(map(str, numbers))}".strip()
    if place.term_program:
        return f"{place.term_program} {place.term_program_version}".strip()
    return place.term or "this terminal"


def unicode_placeholders(version: str) -> bool:
    """Whether the terminal that answered XTVERSION with `version` draws kitty images through
    Unicode placeholders: kitty from 0.28.0, and Ghostty."""
    lowered = version.lower()
    if lowered.startswith("ghostty"):
        return True
    if lowered.startswith("kitty"):
        return _version_numbers(version) >= (0, 28)
    return False


def choose(answers: Answers, place: Place) -> Choice:
    """The best way to draw images that this terminal, as probed, supports."""
    if place.screen:
        return Choice(
            "halfcell",
            "GNU screen passes no image sequences",
            "run Spatiora outside screen, or in tmux ≥ 3.4 built with sixel",
        )
    if place.tmux:
        return _choose_in_tmux(answers, place)
    name = terminal_name(answers, place)
    if not answers.complete:
        return Choice(
            "halfcell",
            f"{name} did not answer the graphics probe within {PROBE_TIMEOUT_S:.0f} s",
            "pin a method with --renderer (sixel, kitty) if your terminal draws images",
        )
    lowered = answers.version.lower()
    if answers.kitty_graphics and unicode_placeholders(answers.version):
        return Choice("kitty", f"{name} draws kitty graphics with Unicode placeholders")
    if lowered.startswith(("wezterm", "iterm2")) or place.term_program in ("iTerm.app", "WezTerm"):
        return Choice("iterm", f"{name} draws iTerm2 inline images")
    if answers.sixel:
        return Choice("sixel", f"{name} answered that it draws sixel")
    if answers.kitty_graphics:
        return Choice(
            "kitty-direct",
            f"{name} draws kitty graphics but has no Unicode placeholders (kitty ≥ 0.28): placed directly",
        )
    hint = "use a terminal that draws sixel or kitty graphics (xterm -ti vt340, foot, WezTerm, kitty, Konsole)"
    if lowered.startswith("xterm"):
        hint = "start xterm with -ti vt340 (and -xrm 'XTerm*numColorRegisters: 256') for sixel"
    elif place.term_program == "vscode":
        hint = "turn on terminal.integrated.enableImages in VS Code's settings for sixel"
    return Choice("halfcell", f"{name} answered no sixel and no kitty graphics", hint)


def _choose_in_tmux(answers: Answers, place: Place) -> Choice:
    tmux = f"tmux {place.tmux_version}".strip()
    outer = place.outer
    outer_name = terminal_name(Answers(version=outer), Place())
    if answers.sixel:
        return Choice("sixel", f"{tmux} is built with sixel and passes it on")
    if outer and unicode_placeholders(outer):
        if place.passthrough in ("on", "all"):
            return Choice(
                "kitty",
                f"{outer_name} outside {tmux} draws kitty graphics with Unicode placeholders, passed through",
                tmux_passthrough=True,
            )
        return Choice(
            "halfcell",
            f"{tmux} does not pass {outer_name}'s kitty graphics on",
            "add `set -g allow-passthrough on` to ~/.tmux.conf (then `tmux source ~/.tmux.conf`) for images",
        )
    if _version_numbers(place.tmux_version) < (3, 4):
        hint = f"sixel through tmux needs tmux ≥ 3.4 built with sixel support (this is {tmux})"
    else:
        hint = f"{tmux} was built without sixel (./configure --enable-sixel)"
    if outer.lower().startswith("kitty"):
        setting = "" if place.passthrough in ("on", "all") else " with `set -g allow-passthrough on`"
        hint += f"; kitty ≥ 0.28{setting} would draw images ({outer_name} has no Unicode placeholders)"
    return Choice("halfcell", f"{tmux} passes no images to this terminal", hint)
