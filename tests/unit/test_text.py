"""Text shown in the UI never carries control sequences or live markup."""

from __future__ import annotations

import pytest
from textual.markup import to_content

from spatiora_tui.ui.text import markup_safe, printable


def test_control_characters_become_visible_escapes() -> None:
    assert printable("a\x1b[31mred\x07\x9b") == "a\\x1b[31mred\\x07\\x9b"
    assert printable("two\nlines\ttab") == "two\\x0alines tab"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"
    assert printable("ünïcode ✓ 漢字") == "ünïcode ✓ 漢字"


@pytest.mark.parametrize("text", ["[b]bold[/]", "\x1b[2J clear", "a[2J\n[dim]x[/]", "ends with \\", "x\\[b]y"])
def test_markup_safe_text_renders_literally(text: str) -> None:
    rendered = to_content(f"[b]{markup_safe(text)}[/] [dim]after[/]").plain
    assert rendered.rstrip().endswith("after")
    assert printable(text).rstrip() in rendered and "\x1b" not in rendered
