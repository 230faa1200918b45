"""Crash safety: a process killed while writing an image, the history index or config.toml leaves
every file complete (the old version or the new one), loses nothing earlier, and the temp file it
left is cleaned up on the next start. The kill is real (SIGKILL, in a child process), made to
happen half-way through the write by the `atomic write` failpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spatiora_tui import atomic, failpoints
from spatiora_tui.config import Settings, read_settings, settings_to_toml, write_settings
from spatiora_tui.outputs import HISTORY_INDEX, HistoryIndex, OutputError, read_metadata, save_result
from tests.helpers import REPO, make_result

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# Run in a child: save one result into argv[1] (through the real save_result).
CHILD_SAVE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from spatiora_tui import failpoints
    from tests.helpers import make_result
    from spatiora_tui.outputs import save_result
    failpoints.arm_from_env()
    save_result(make_result(), Path(sys.argv[1]), sys.argv[2])
""")

CHILD_CONFIG = textwrap.dedent("""
    import dataclasses, sys
    from pathlib import Path
    from spatiora_tui import failpoints
    from spatiora_tui.config import Settings, ModelSettings, write_settings
    failpoints.arm_from_env()
    write_settings(dataclasses.replace(Settings(), model=ModelSettings(source="/new/model")), Path(sys.argv[1]))
""")


def run_child(code: str, *args: str, failpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, failpoints.ENV: failpoint, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(atomic.PARTIAL_SUFFIX)]


def test_killed_while_writing_an_image_leaves_earlier_images_and_no_broken_one(tmp_path: Path) -> None:
    first = save_result(make_result(), tmp_path, "first")
    before = first.read_bytes()
    proc = run_child(CHILD_SAVE, str(tmp_path), "second", failpoint="atomic write=kill")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["first.png"], "no half image under a real name"
    assert first.read_bytes() == before and read_metadata(first).spatiora is not None
    assert len(partials(tmp_path)) == 1, "the killed writer's temp file"
    # The next start cleans it; the index still lists the first image.
    assert atomic.clean_stale_partials(tmp_path) and not partials(tmp_path)
    assert list(HistoryIndex(tmp_path).entries()) == ["first.png"]


def test_killed_while_writing_the_history_index_keeps_the_old_index(tmp_path: Path) -> None:
    save_result(make_result(), tmp_path, "first")
    index_before = (tmp_path / HISTORY_INDEX).read_bytes()
    # The first atomic write is the image, the second the index: kill in the index.
    proc = run_child(CHILD_SAVE, str(tmp_path), "second", failpoint="atomic write=kill@2")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / HISTORY_INDEX).read_bytes() == index_before, "the old index, whole"
    assert (tmp_path / "second.png").is_file() and read_metadata(tmp_path / "second.png").spatiora
    atomic.clean_stale_partials(tmp_path)
    # The image written before the kill is not lost: the history reads it from its own metadata.
    entries = HistoryIndex(tmp_path).entries()
    assert set(entries) == {"first.png"}
    from spatiora_tui.ui.screens.history import list_images

    assert {p.name for p in list_images(tmp_path)} == {"first.png", "second.png"}


def test_killed_while_writing_config_keeps_the_old_config(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    write_settings(Settings(), target)
    before = target.read_text()
    proc = run_child(CHILD_CONFIG, str(target), failpoint="atomic write=kill")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_text() == before and read_settings(target).model.source == "demo"
    atomic.clean_stale_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    # And without the kill, the new config arrives whole.
    proc = run_child(CHILD_CONFIG, str(target), failpoint="")
    assert proc.returncode == 0, proc.stderr
    assert read_settings(target).model.source == "/new/model"


def test_a_live_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / f".x.png.{os.getpid()}.partial"
    mine.write_bytes(b"in progress")
    unrelated = tmp_path / ".notes.partial"
    unrelated.write_text("not ours")
    assert atomic.clean_stale_partials(tmp_path) == []
    assert mine.exists() and unrelated.exists()


def test_disk_full_while_saving_keeps_nothing_half_written(tmp_path: Path) -> None:
    save_result(make_result(), tmp_path, "first")
    failpoints.arm("atomic write", "enospc")
    with pytest.raises(OutputError, match="the disk is full; free some space .* and save again"):
        save_result(make_result(), tmp_path, "second")
    failpoints.reset()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["first.png"]
    assert not partials(tmp_path), "a failed write removes its temp file"
    assert save_result(make_result(), tmp_path, "second").name == "second.png", "saving again works"


def test_history_index_lists_saved_images_and_survives_damage(tmp_path: Path) -> None:
    a = save_result(make_result(), tmp_path, "a")
    b = save_result(make_result(), tmp_path, "b")
    entries = HistoryIndex(tmp_path).entries()
    assert list(entries) == ["a.png", "b.png"]
    assert entries["b.png"]["task"] == "interior" and entries["b.png"]["seed"] == 1234
    assert entries["b.png"]["prompt"] == "a loft, with: colons" and entries["b.png"]["size"] == "64x48"
    # A deleted image drops out; a damaged index is rebuilt from the images themselves.
    a.unlink()
    assert list(HistoryIndex(tmp_path).entries()) == ["b.png"]
    (tmp_path / HISTORY_INDEX).write_text("{ not json")
    assert list(HistoryIndex(tmp_path).entries()) == ["b.png"]
    assert json.loads((tmp_path / HISTORY_INDEX).read_text())["format"] == 1, "rewritten whole"
    assert b.is_file()


def test_file_names_never_carry_control_characters(tmp_path: Path) -> None:
    path = save_result(make_result(), tmp_path, "room\x1b]0;pwned\x07\x1b[2Jname")
    assert path.name == "room_]0;pwned_[2Jname.png"
    assert "\x1b" not in json.dumps(HistoryIndex(tmp_path).entries())


def test_config_text_round_trips(tmp_path: Path) -> None:
    target = tmp_path / "c.toml"
    write_settings(Settings(), target)
    assert target.read_text() == settings_to_toml(Settings())


def _no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without hard links (FAT, some network mounts)."""
    import errno

    def refuse(*_args, **_kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("spatiora_tui.atomic.os.link", refuse)


def test_write_new_without_hard_links_never_replaces_a_file_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another program takes the name just after any look at it: its file must survive.
    _no_hard_links(monkeypatch)
    target = tmp_path / "img.png"
    real_exists, real_lexists = Path.exists, os.path.lexists
    raced: list[bool] = []

    def race(seen: bool, path: object) -> bool:
        if Path(str(path)) == target and not seen:
            target.write_bytes(b"the other writer's image")
            raced.append(True)
        return seen

    monkeypatch.setattr(Path, "exists", lambda self, **kw: race(real_exists(self, **kw), self))
    monkeypatch.setattr("spatiora_tui.atomic.os.path.lexists", lambda path: race(real_lexists(path), path))
    path = atomic.write_new(tmp_path, "img", ".png", b"ours")
    assert path.read_bytes() == b"ours"
    if raced or path != target:
        assert target.read_bytes() == b"the other writer's image"
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*lock"))


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "lock-file"])
def test_write_new_without_hard_links_from_many_threads_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    import threading

    _no_hard_links(monkeypatch)
    if not renameat2:
        monkeypatch.setattr(atomic, "_renameat2", lambda: None)
    paths: list[Path] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        for i in range(20):
            path = atomic.write_new(tmp_path, "img", ".png", f"{k}-{i}".encode())
            with lock:
                paths.append(path)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 80
    assert sorted(p.read_bytes() for p in paths) == sorted(f"{k}-{i}".encode() for k in range(4) for i in range(20))
    assert not list(tmp_path.glob(".*partial")) and not list(tmp_path.glob(".*lock"))
