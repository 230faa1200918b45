"""Make text safe to show: nothing from a prompt, a file name or image metadata reaches the
terminal as a control sequence (an ESC in a PNG's text chunk must not repaint the screen)."""

from __future__ import annotations

import unicodedata


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with control characters (C0, C1, DEL, ESC) shown as visible escapes."""
    out = []
    for ch in text:
        if ch == "\n" and keep_newlines:
            out.append(ch)
        elif ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) == "Cc":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def markup_safe(text: str, keep_newlines: bool = False) -> str:
    """`printable(text)` with every "[" escaped for Textual markup, so "[b]" or "[2J" in a
    prompt stays literal (Textual's own escape() leaves brackets that do not look like tags,
    which its parser can still pair with a later tag)."""
    safe = printable(text, keep_newlines).replace("[", "\\[")
    # A trailing backslash would escape whatever markup follows the text.
    return safe + " " if safe.endswith("\\") else safe


def gauge(fraction: float, width: int) -> str:
    """A `width`-cell bar, filled to `fraction` (clamped to 0..1), as Textual markup."""
    filled = round(width * min(max(fraction, 0.0), 1.0))
    return f"[$primary]{'█' * filled}[/][$surface-lighten-2]{'░' * (width - filled)}[/]"


def clip(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
