"""tests/unit is the torch-free part of the suite: config, prompts, the model library, outputs,
atomic writes, telemetry with recorded readings, the UI's pacing and text. It needs no torch and
must stay so. Two checks keep it true:

- once per session, a fresh interpreter imports every tests/unit module and must not have
  imported torch (an import at the top of a test module, or of anything it imports);
- each test must not import torch while it runs, where the session has not already (a run of
  tests/unit alone: tests that load the engine belong in tests/engine).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


_torch_at_start: list[bool] = []  # set before the first unit test, once collection is done


@pytest.fixture(scope="session", autouse=True)
def _unit_modules_import_no_torch() -> None:
    # Session fixtures are set up before module ones (the loaded engine), after collection
    # (which imports the other folders' test modules, torch with them in a full run).
    _torch_at_start.append("torch" in sys.modules)
    modules = [f"tests.unit.{p.stem}" for p in sorted(HERE.glob("test_*.py"))]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules:\n"
        "        sys.exit(f'{name} imports torch; move it to tests/engine')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=HERE.parents[1], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "importing tests/unit failed")


@pytest.fixture(autouse=True)
def _test_imports_no_torch(request: pytest.FixtureRequest):
    # Compared with the session's start, not the test's: a module-scoped fixture (the loaded
    # engine) is set up before this one and would otherwise slip through.
    yield
    if not _torch_at_start[0] and "torch" in sys.modules:
        pytest.fail(
            f"torch was imported by {request.node.nodeid} or its fixtures; tests that need it belong in tests/engine"
        )


# The session and sweep tests share these: demo-model settings in tmp_path and the fake engine
# (the unit suite never loads a real one).
@pytest.fixture
def settings(tmp_path: Path):
    from tests.helpers import small_settings

    return small_settings(tmp_path)


@pytest.fixture
def fake_engine(settings):
    from tests.fake_engine import FakeEngine

    eng = FakeEngine(settings)
    eng.load()
    return eng
