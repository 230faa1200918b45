"""Which drawing method each terminal gets, from its answers to the start-up probe.

Recorded: the files in terminal_answers/ are what real terminals sent back on this machine
(`python -m tools.record_terminal OUT.json` run inside each): xterm 379 with and without
`-ti vt340`, Debian's kitty 0.26.5, mlterm, and tmux 3.3a inside xterm and inside kitty.
From docs and sources: the other rows give the answers those terminals document (XTVERSION
text, DA1 parameters, the kitty graphics query's OK) and the variables they set.
"""

from __future__ import annotations

import json
import os
import pty
import threading
from pathlib import Path

import pytest

from spatiora_tui.ui.terminal import (
    DA1,
    KITTY_QUERY,
    Answers,
    Place,
    choose,
    parse,
    place_from_environment,
    probe,
    terminal_name,
)

RECORDED = Path(__file__).parent / "terminal_answers"


def recorded(name: str) -> tuple[Answers, Place]:
    data = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
    return parse(data["raw"].encode("latin-1")), Place(**data["place"])


@pytest.mark.parametrize(
    ("name", "method", "words"),
    [
        ("xterm-vt340", "sixel", "XTerm 379 answered that it draws sixel"),
        ("xterm", "halfcell", "-ti vt340"),
        ("kitty-0.26", "kitty-direct", "no Unicode placeholders"),
        ("mlterm", "sixel", "mlterm"),
        ("tmux-3.3-xterm", "halfcell", "tmux ≥ 3.4 built with sixel"),
        ("tmux-3.3-kitty-0.26", "halfcell", "kitty ≥ 0.28 would draw images"),
    ],
)
def test_recorded_terminals_get_their_best_method_with_a_reason(name: str, method: str, words: str) -> None:
    answers, place = recorded(name)
    choice = choose(answers, place)
    assert choice.method == method
    assert words in choice.reason + " " + choice.hint


def test_the_recorded_answers_parse_into_every_field() -> None:
    xterm, _ = recorded("xterm-vt340")
    assert xterm.version == "XTerm(379)" and xterm.sixel and xterm.complete
    assert xterm.sixel_colors == 256 and xterm.sixel_max == (480, 312) and not xterm.kitty_graphics
    kitty, _ = recorded("kitty-0.26")
    assert kitty.kitty_graphics and not kitty.sixel and kitty.cell == (9, 18)
    assert terminal_name(kitty, Place()) == "kitty 0.26.5"
    mlterm, _ = recorded("mlterm")
    assert mlterm.version == "" and mlterm.sixel_colors == 1024 and mlterm.sixel_max is None  # a status-3 answer


WEZTERM = "\x1bP>|WezTerm 20240203-110809-5046fc22\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[?65;4;6;18;22c"


@pytest.mark.parametrize(
    ("raw", "place", "method"),
    [
        # kitty ≥ 0.28 and Ghostty draw Unicode placeholders
        ("\x1bP>|kitty(0.39.1)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[6;20;10t\x1b[?62;c", Place(term="xterm-kitty"), "kitty"),
        ("\x1bP>|ghostty 1.1.3\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[?62;22c", Place(term_program="ghostty"), "kitty"),
        # WezTerm and iTerm2: the iTerm2 protocol is their best
        (WEZTERM, Place(term_program="WezTerm"), "iterm"),
        ("\x1bP>|iTerm2 3.5.0\x1b\\\x1b[?62;4c", Place(term_program="iTerm.app"), "iterm"),
        # sixel terminals: Konsole (which also answers the kitty query), foot, Windows Terminal,
        # VS Code with images on
        ("\x1b_Gi=31;OK\x1b\\\x1b[?62;1;4c", Place(term="xterm-256color"), "sixel"),
        ("\x1bP>|foot(1.16.2)\x1b\\\x1b[?62;4;22;28c", Place(term="foot"), "sixel"),
        ("\x1b[?61;4;6;7;14;21;22;23;24;28;32;42c", Place(term="xterm-256color"), "sixel"),
        ("\x1bP>|xterm.js(5.5.0)\x1b\\\x1b[?62;4;9;22c", Place(term_program="vscode"), "sixel"),
        # VS Code without terminal.integrated.enableImages
        ("\x1bP>|xterm.js(5.5.0)\x1b\\\x1b[?1;2c", Place(term_program="vscode"), "halfcell"),
        # tmux 3.4 built with sixel answers DA1 with a 4
        ("\x1bP>|tmux 3.4\x1b\\\x1b[?1;2;4c", Place(tmux=True, tmux_version="3.4", outer="XTerm(379)"), "sixel"),
        # kitty 0.35 outside tmux, passthrough on or off
        (
            "\x1bP>|tmux 3.4\x1b\\\x1b[?1;2c",
            Place(tmux=True, tmux_version="3.4", outer="kitty(0.35.2)", passthrough="on"),
            "kitty",
        ),
        (
            "\x1bP>|tmux 3.4\x1b\\\x1b[?1;2c",
            Place(tmux=True, tmux_version="3.4", outer="kitty(0.35.2)", passthrough="off"),
            "halfcell",
        ),
        # GNU screen; a terminal that never answered
        ("\x1b[?1;2c", Place(term="screen", screen=True), "halfcell"),
        ("", Place(term="xterm-256color"), "halfcell"),
    ],
)
def test_documented_terminals_get_their_best_method(raw: str, place: Place, method: str) -> None:
    choice = choose(parse(raw.encode()), place)
    assert choice.method == method, choice
    assert choice.reason


def test_tmux_with_a_kitty_outside_says_which_setting_gives_images() -> None:
    raw = b"\x1bP>|tmux 3.4\x1b\\\x1b[?1;2c"
    off = choose(parse(raw), Place(tmux=True, tmux_version="3.4", outer="kitty(0.35.2)", passthrough="off"))
    assert "set -g allow-passthrough on" in off.hint
    on = choose(parse(raw), Place(tmux=True, tmux_version="3.4", outer="kitty(0.35.2)", passthrough="on"))
    assert on.tmux_passthrough and "passed through" in on.reason


def test_a_silent_terminal_is_named_and_the_way_to_pin_a_method_given() -> None:
    choice = choose(parse(b""), Place(term="xterm-256color"))
    assert "did not answer" in choice.reason and "--renderer" in choice.hint


def test_the_kitty_query_is_not_sent_where_it_would_show() -> None:
    for place in (Place(tmux=True), Place(screen=True), Place(term="linux")):
        assert not place.kitty_query_safe
    assert Place(term="xterm-256color").kitty_query_safe


def test_place_reads_gnu_screen_and_tmux_from_the_environment() -> None:
    assert place_from_environment({"STY": "1234.pts-0", "TERM": "screen"}).screen
    plain = place_from_environment({"TERM": "xterm-kitty", "TERM_PROGRAM": "WezTerm"})
    assert plain == Place(term="xterm-kitty", term_program="WezTerm")


def _fake_terminal(answer: bytes | None) -> tuple[int, int, threading.Thread, list[bytes]]:
    """A pty whose far side reads the probe and, unless `answer` is None, answers it."""
    controller, tty_side = pty.openpty()
    heard: list[bytes] = []

    def terminal() -> None:
        got = b""
        while DA1 not in got:
            got += os.read(controller, 4096)
        heard.append(got)
        if answer is not None:
            os.write(controller, answer)

    thread = threading.Thread(target=terminal, daemon=True)
    thread.start()
    return controller, tty_side, thread, heard


def test_the_probe_reads_until_the_da1_answer_and_skips_the_kitty_query_in_tmux() -> None:
    import termios
    import tty

    answer = b"\x1bP>|kitty(0.26.5)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[?62;c"
    controller, side, thread, heard = _fake_terminal(answer)
    try:
        tty.setcbreak(side, termios.TCSANOW)
        raw = probe(side, side, Place(term="xterm-kitty"), timeout=10)
        thread.join(10)
        assert parse(raw).kitty_graphics and parse(raw).complete
        assert KITTY_QUERY in heard[0]
    finally:
        os.close(controller)
        os.close(side)

    controller, side, thread, heard = _fake_terminal(b"\x1b[?1;2c")
    try:
        tty.setcbreak(side, termios.TCSANOW)
        probe(side, side, Place(tmux=True), timeout=10)
        thread.join(10)
        assert KITTY_QUERY not in heard[0]
    finally:
        os.close(controller)
        os.close(side)


def test_the_probe_gives_up_at_its_timeout_on_a_silent_terminal() -> None:
    import termios
    import tty

    controller, side, thread, _ = _fake_terminal(None)
    try:
        tty.setcbreak(side, termios.TCSANOW)
        raw = probe(side, side, Place(), timeout=0.2)
        assert not parse(raw).complete
    finally:
        os.close(controller)
        os.close(side)
