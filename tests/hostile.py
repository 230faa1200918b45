"""Hostile requests for the served engines' security property (tests/e2e/test_security.py): paths
on the server where names belong (absolute, relative, `..`, symlinks, over-long, NUL), wrong
types, huge and deeply nested payloads, and the audit log that tells which files a server opened.

The servers run with tests/audit on PYTHONPATH, whose sitecustomize logs every file the process
opens (SPATIORA_AUDIT_OPEN_LOG). Bait files sit in a private folder of the test's: nothing a
client sends may make a server open one of them, or any file outside the folders a server has
reason to read (its Python, its config, models and state, its upload folder, /proc and /dev).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
AUDIT_DIR = REPO / "tests" / "audit"
#: Where the server may open files whatever a client asks (besides the test's own folders).
SYSTEM_ROOTS = ("/proc", "/sys", "/dev", "/etc/localtime", "/usr/share/zoneinfo", "/tmp/ray")


@dataclass(frozen=True)
class Bait:
    """Files no client may reach: a private folder, and links to it from a shared one."""

    private: Path
    links: Path
    secret_png: Path
    lora: Path
    model: Path

    def paths(self) -> list[str]:
        """What a hostile client names: the bait by absolute path, through links, from the
        server's folders upwards, and the system's own secrets."""
        ups = "../" * 12
        names = [
            str(self.secret_png),
            str(self.lora),
            str(self.lora.with_suffix("")),
            str(self.model),
            str(self.private),
            str(self.links / "secret.png"),
            str(self.links / "lora"),
            str(self.links / "lora.safetensors"),
            f"{ups}{str(self.lora.with_suffix('')).lstrip('/')}",
            f"{ups}{str(self.secret_png).lstrip('/')}",
            "..",
            "../..",
            "./../adapters/../../private",
            "/etc/passwd",
            "/etc/shadow",
            "/proc/self/environ",
            "/root/.ssh/id_rsa",
            "~/.ssh/id_rsa",
            "~root",
            "file:///etc/passwd",
            "C:\\Windows\\win.ini",
            "a" * 300,
            "b" * 252 + ".png",
            "x\x00y",
            "",
            " ",
            ".",
            "\u202e\u0000\x1b]0;PWNED\x07",
        ]
        return names


def make_bait(root: Path) -> Bait:
    """The bait under `root`: a PNG, a LoRA the tiny model would take, a checkpoint-named file."""
    from PIL import Image

    private = root / "private"
    links = root / "links"
    private.mkdir(mode=0o700, parents=True)
    links.mkdir()
    secret = private / "secret.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(secret)
    lora = private / "evil.safetensors"
    shutil.copyfile(REPO / "spatiora_tui" / "engine" / "demo_model" / "adapters" / "floorplan.safetensors", lora)
    model = private / "model.safetensors"
    shutil.copyfile(lora, model)
    (links / "secret.png").symlink_to(secret)
    (links / "lora.safetensors").symlink_to(lora)
    (links / "lora").symlink_to(private)
    return Bait(private, links, secret, lora, model)


def png_bytes(side: int = 16) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (0, 128, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def hostile(bait: Bait) -> st.SearchStrategy[tuple[dict[str, Any], bytes]]:
    """One hostile request (its message without an id, and the file it carries)."""
    path = st.sampled_from(bait.paths()) | st.text(max_size=40)
    task = st.sampled_from(["interior", "floorplan", "base"])
    small = {"steps": 1, "width": 64, "height": 64, "seed": 1}

    def generate(request: dict[str, Any]) -> dict[str, Any]:
        return {"type": "generate", "request": {"task": "base", **small, **request}, "preview_format": "jpeg"}

    init_no_file = st.builds(lambda p, t: (generate({"prompt": "x", "task": t, "init_image": p}), b""), path, task)
    init_with_file = st.builds(
        lambda p, blob: (generate({"prompt": "x", "init_image": p or "a.png", "strength": 0.5}), blob),
        path,
        st.sampled_from([png_bytes(), b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""]),
    )
    lora_tag = st.builds(
        lambda p, field, t: (generate({"prompt": "x", field: f"a room <lora:{p}:1>", "task": t}), b""),
        path,
        st.sampled_from(["prompt", "negative_prompt"]),
        task,
    )
    model = st.builds(
        lambda kind, p: ({"type": kind, "source": p}, b""), st.sampled_from(["switch_model", "load"]), path
    )
    switch_task = st.builds(lambda p: ({"type": "switch_task", "name": p}, b""), path)
    wrong_types = st.builds(
        lambda field, value: (generate({"prompt": "x", field: value}), b""),
        st.sampled_from(["prompt", "task", "seed", "steps", "guidance", "width", "init_image", "strength", "nope"]),
        JUNK,
    )
    huge = st.sampled_from(
        [
            (generate({"prompt": "x" * 200_000}), b""),
            (generate({"prompt": _nested(200)}), b""),
            ({"type": "generate", "request": _nested(400)}, b""),
            ({"type": "switch_model", "source": ["/etc/passwd"] * 1000}, b""),
            (generate({"prompt": "<lora:" * 2000}), b""),
        ]
    )
    return st.one_of(init_no_file, init_with_file, lora_tag, model, switch_task, wrong_types, huge)


@dataclass
class OpenLog:
    """The audit log a server writes (tests/audit/sitecustomize.py), read as it grows."""

    path: Path
    allowed: tuple[str, ...]
    forbidden: tuple[str, ...]
    offset: int = 0

    def env(self) -> dict[str, str]:
        """What the server's environment needs for the log."""
        python_path = os.pathsep.join(p for p in (str(AUDIT_DIR), os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": python_path, "SPATIORA_AUDIT_OPEN_LOG": str(self.path)}

    def pids(self) -> set[str]:
        """The processes that wrote to the log so far (a positive control: the hook runs)."""
        try:
            return {line.split(b"\t", 1)[0].decode() for line in self.path.read_bytes().splitlines()}
        except FileNotFoundError:
            return set()

    def new_opens(self) -> list[str]:
        """Paths opened since the last call."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [line.split(b"\t", 1)[-1].decode("utf-8", "replace") for line in data[:end].splitlines()]

    def outside(self) -> list[str]:
        """Opened files (since the last call) in a forbidden place or in no allowed one."""
        bad = []
        for opened in self.new_opens():
            real = os.path.realpath(opened)
            forbidden = any(_under(p, root) for p in (opened, real) for root in self.forbidden)
            allowed = any(_under(real, root) or _under(opened, root) for root in self.allowed)
            if forbidden or not allowed:
                bad.append(opened)
        return bad

    @classmethod
    def for_server(cls, log: Path, bait: Bait, *folders: Path) -> OpenLog:
        """A log for a server whose own files are in `folders`."""
        uploads = os.path.join(tempfile.gettempdir(), "spatiora-serve-")
        roots = {sys.prefix, sys.base_prefix, str(REPO), uploads, *SYSTEM_ROOTS, *(str(f) for f in folders)}
        roots |= {os.path.realpath(r) for r in roots}
        return cls(log, tuple(sorted(roots)), (str(bait.private), os.path.realpath(bait.private)))


def _under(path: str, root: str) -> bool:
    if root.endswith("-"):  # a name prefix (the upload folders are spatiora-serve-XXXX)
        return path.startswith(root)
    return path == root or path.startswith(root.rstrip("/") + "/")
