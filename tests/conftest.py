"""Shared fixtures. Nothing here touches the network or the user's own cache and config.

The demo model is built once per test session into a temporary cache; tests that need a loaded
engine share one (module-scoped) because loading is the slow part. Tasks in `small_settings` use
64x64 images and few steps so each generation takes tens of milliseconds on a CPU. Helpers (not
fixtures) are in tests/helpers.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub: the suite must never reach for the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.helpers import FAMILIES, Tiny, small_settings  # after the environment is set


def _on_ray(item: pytest.Item | None) -> bool:
    """Whether a test runs on the local Ray cluster (marked `ray`, or asks for the cluster)."""
    if item is None:
        return False
    return item.get_closest_marker("ray") is not None or "ray_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the local Ray cluster run together, last (and under pytest-xdist's
    `--dist loadgroup` on one worker, as one group): the cluster lives only while they run, not
    beside the rest of the suite, whose CPU its controller, proxy and agents would share. The
    other tests are grouped by file."""
    items.sort(key=_on_ray)
    for item in items:
        # Under xdist each file's tests stay together on one worker, in their order (module
        # fixtures are set up once, and no test meets a fixture in a state its file never had).
        item.add_marker(pytest.mark.xdist_group("ray" if _on_ray(item) else item.nodeid.split("::")[0]))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last Ray test (they run in a row: above), with its fixtures torn down, the
    cluster stops instead of idling on beside the tests after it."""
    if _RAY["running"] and _on_ray(item) and not _on_ray(nextitem):
        _stop_ray()


#: Whether this test process's local Ray cluster runs.
_RAY = {"running": False}


def _stop_ray() -> None:
    from tests.ray_app import stop_ray

    _RAY["running"] = False
    stop_ray()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide cache dir holding the demo build; also exported for subprocesses."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["SPATIORA_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _no_failpoints():
    """A failpoint a test armed and did not reach never fires in the next test."""
    from spatiora_tui import failpoints

    failpoints.reset()
    yield
    failpoints.reset()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the user's config or writes into the repository's outputs/; each has its own
    runtime folder (where a user's engine would put its socket), and no test leaves an engine
    running: one left behind is killed and the test fails. Commands run in this process (the
    engine in-process) unless a test asks for the user's engine (SPATIORA_ENGINE=user)."""
    from tests.helpers import leftover_engines

    monkeypatch.delenv("SPATIORA_CONFIG", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SPATIORA_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("SPATIORA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SPATIORA_ENGINE", "inproc")
    runtime = Path(tempfile.mkdtemp(prefix="sp-run-"))  # short: a socket's path is at most 107 bytes
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    try:
        yield
    finally:
        left = leftover_engines(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
    if left:
        pytest.fail(f"the test left engines running (killed now): {left}")


@pytest.fixture(scope="module")
def demo_engine(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A loaded LocalEngine on the demo model, shared by one test module."""
    from spatiora_tui.engine.local import LocalEngine

    eng = LocalEngine(small_settings(tmp_path_factory.mktemp("engine-root")), cache_dir=cache_dir)
    eng.load()
    return eng


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    from tests.tiny_models import write_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for family, inpaint in FAMILIES:
        key = f"{family}{'-inpaint' if inpaint else ''}"
        path, config, pipe = write_checkpoint(root / key, family, inpaint)
        made[key] = Tiny(family, inpaint, path, config, pipe)
    return made


@pytest.fixture(scope="session")
def ray_cluster(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray for the Ray Serve tests (the serve extra), started by the first of them and
    stopped after the last (pytest_runtest_teardown; here when a run ends part-way through
    them): its workers inherit this environment (the demo cache, and the audit hook of
    tests/audit, which logs the files they open to the path yielded). Skipped when Ray is not
    installed."""
    pytest.importorskip("ray.serve", reason="the serve extra (ray[serve]) is not installed")
    from tests.hostile import AUDIT_DIR
    from tests.ray_app import start_ray

    log = tmp_path_factory.mktemp("ray-audit") / "opens.log"
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "SPATIORA_AUDIT_OPEN_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(AUDIT_DIR), saved["PYTHONPATH"]) if p)
    os.environ["SPATIORA_AUDIT_OPEN_LOG"] = str(log)
    try:
        start_ray()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    _RAY["running"] = True
    yield log
    if _RAY["running"]:
        _stop_ray()
