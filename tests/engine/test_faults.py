"""Faults inside the engine, made to happen through failpoints (spatiora_tui/failpoints.py):
out of memory while denoising and while decoding, cancel at every step. After each, the engine
keeps working and makes the same image it made before."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

from spatiora_tui import failpoints
from spatiora_tui.engine.api import EngineOOM, GenerationRequest, StepPreview
from spatiora_tui.engine.api import is_out_of_memory as _is_out_of_memory
from tests.helpers import sigint_handled_by

REQUEST = GenerationRequest(prompt="a hall", task="floorplan", seed=11)


def pixels(result) -> np.ndarray:
    assert result.image is not None
    return np.asarray(result.image, dtype=np.int16)


@pytest.fixture(scope="module")
def reference(demo_engine) -> np.ndarray:
    return pixels(demo_engine.generate(REQUEST))


@pytest.mark.parametrize("at", [1, 3])
def test_oom_while_denoising_is_reported_and_the_next_generation_succeeds(demo_engine, reference, at: int) -> None:
    failpoints.arm("denoise", "oom", at=at)
    with pytest.raises(EngineOOM) as caught:
        demo_engine.generate(REQUEST)
    message = str(caught.value)
    assert "out of memory during denoise at 64x64" in message
    assert "memory was released" in message and "Lower width/height or close other programs" in message
    assert demo_engine.telemetry.depth == 0, "no stage is left open"
    assert np.array_equal(pixels(demo_engine.generate(REQUEST)), reference), "same image after the failure"


@pytest.mark.parametrize("action", ["oom", "memory"])  # CUDA's OOM, and the CPU allocator's MemoryError
def test_oom_in_vae_decode_retries_in_tiles(demo_engine, reference, action) -> None:
    failpoints.arm("vae decode", action)
    result = demo_engine.generate(REQUEST)
    assert any("decoded in tiles" in w for w in result.warnings)
    assert np.abs(pixels(result) - reference).max() <= 2, "the tiled decode draws the same image"
    assert "vae decode" not in failpoints.armed()
    assert not any("tiles" in w for w in demo_engine.generate(REQUEST).warnings), "tiling is off again"


def test_oom_in_vae_decode_twice_is_reported_and_the_next_generation_succeeds(demo_engine, reference) -> None:
    failpoints.arm("vae decode", "oom", times=2)
    with pytest.raises(EngineOOM, match="out of memory during VAE decode at 64x64"):
        demo_engine.generate(REQUEST)
    assert demo_engine.telemetry.depth == 0
    assert np.array_equal(pixels(demo_engine.generate(REQUEST)), reference)


@pytest.mark.parametrize(
    "message",
    [
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes.",
        "MPS backend out of memory",
        "can't allocate memory: you tried to allocate 5 bytes",
    ],
)
def test_every_backends_out_of_memory_error_is_recognised(message: str) -> None:
    assert _is_out_of_memory(RuntimeError(message))
    assert not _is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


@pytest.mark.parametrize("at_step", [1, 2, 3, 4])
def test_cancel_at_any_step_saves_nothing_and_the_engine_goes_on(demo_engine, reference, at_step: int) -> None:
    cancel = threading.Event()

    def on_step(preview: StepPreview) -> None:
        if preview.step == at_step:
            cancel.set()

    result = demo_engine.generate(REQUEST, on_step=on_step, cancel=cancel)
    assert result.cancelled and result.image is None
    assert result.steps_done == min(at_step + 1, 4)
    assert demo_engine.telemetry.depth == 0
    assert np.array_equal(pixels(demo_engine.generate(REQUEST)), reference)


def test_failpoints_from_the_environment() -> None:
    failpoints.arm_from_env("denoise=eacces@3; save=enospc*2")
    assert failpoints.armed() == {"denoise": "eacces", "save": "enospc"}
    for _ in range(2):
        with pytest.raises(OSError, match="No space left"):
            failpoints.hit("save")
    failpoints.hit("save")  # fired twice, then disarmed
    failpoints.hit("denoise")
    failpoints.hit("denoise")
    with pytest.raises(PermissionError):
        failpoints.hit("denoise")  # the third hit
    assert failpoints.armed() == {}
    with pytest.raises(ValueError, match="unknown failpoint 'sve'"):
        failpoints.arm_from_env("sve=oom")


def test_oom_while_loading_the_model_is_reported_and_loading_again_works(cache_dir, tmp_path) -> None:
    from spatiora_tui.engine.local import LocalEngine
    from tests.helpers import small_settings

    engine = LocalEngine(small_settings(tmp_path), cache_dir=cache_dir)
    failpoints.arm("load", "oom")
    with pytest.raises(EngineOOM, match="out of memory while loading spatiora-demo; try dtype"):
        engine.load()
    assert engine.model is None
    assert engine.load().kind == "demo", "loading again works"


def test_a_memory_error_while_denoising_becomes_engine_oom(demo_engine, reference) -> None:
    failpoints.arm("denoise", "memory", at=2)
    with pytest.raises(EngineOOM, match="out of memory during denoise"):
        demo_engine.generate(REQUEST)
    assert demo_engine.telemetry.depth == 0
    assert np.array_equal(pixels(demo_engine.generate(REQUEST)), reference)


@pytest.fixture
def foreground_sigint():
    """SIGINT as a foreground terminal job gets it, even where the suite runs in the background
    (`make test &` hands it SIGINT ignored, and interrupt_main then does nothing)."""
    with sigint_handled_by(signal.default_int_handler):
        yield


@pytest.mark.usefixtures("foreground_sigint")
def test_ctrl_c_as_the_last_step_ends_still_cancels(cache_dir, tmp_path, monkeypatch, capsys) -> None:
    # The unlucky moment: SIGINT lands after the engine's last look at the cancel flag, so the
    # image completes. ctrl+c still means "stop and keep nothing", exit 130.
    import _thread

    from spatiora_tui import cli
    from spatiora_tui.cli import generate

    real_update = generate.ProgressLine.update

    def update(self, preview) -> None:
        real_update(self, preview)
        if preview.step == preview.total:
            _thread.interrupt_main()

    monkeypatch.setattr(generate.ProgressLine, "update", update)
    (tmp_path / "config.toml").write_text(
        '[[tasks]]\nname = "base"\nprompt_template = "{prompt}"\nsteps = 2\nwidth = 64\nheight = 64\n', encoding="utf-8"
    )
    out = tmp_path / "out"
    code = cli.main(["generate", "--config", str(tmp_path / "config.toml"), "--out", str(out), "x"])
    err = capsys.readouterr().err
    assert code == 130, err
    assert "nothing saved" in err
    assert not out.exists() or not list(out.glob("*.png"))
