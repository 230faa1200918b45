"""The engine on the demo model: task modes, adapter switching, previews, cancel, results."""

from __future__ import annotations

import dataclasses
import itertools
import threading

import numpy as np
import pytest

from spatiora_tui.engine.api import EngineError, GenerationRequest, StepPreview


def pixels(result) -> np.ndarray:
    assert result.image is not None
    return np.asarray(result.image, dtype=np.int16)


def test_load_reports_the_demo_model(demo_engine) -> None:
    model = demo_engine.model
    assert model.kind == "demo" and model.family == "sd1" and model.random_weights
    assert model.device == "cpu" and model.dtype == "fp32"
    assert demo_engine.load() is model, "a second load is a no-op"


@pytest.mark.parametrize("task", ["interior", "floorplan", "base"])
def test_each_task_generates_with_its_settings(demo_engine, task: str) -> None:
    result = demo_engine.generate(GenerationRequest(prompt="a loft", task=task, seed=1))
    assert not result.cancelled and result.steps_done == 4
    assert result.image.size == (64, 64) and result.image.mode == "RGB"
    p = result.params
    assert p.task == task and p.seed == 1 and p.steps == 4
    assert p.full_prompt == demo_engine.settings.task(task).render_prompt("a loft")
    assert [a.name for a in p.adapters] == [a.name for a in demo_engine.settings.task(task).adapters]
    assert all(len(a.sha256) == 64 for a in p.adapters)
    assert demo_engine.active_task == task


def test_task_modes_give_different_images(demo_engine) -> None:
    # Same prompt text and seed; only the task's adapters (and template) differ.
    images = {
        task: pixels(demo_engine.generate(GenerationRequest(prompt="x", task=task, seed=7)))
        for task in ("interior", "floorplan", "base")
    }
    assert np.abs(images["interior"] - images["floorplan"]).max() > 0
    assert np.abs(images["interior"] - images["base"]).max() > 0
    assert np.abs(images["floorplan"] - images["base"]).max() > 0


def test_adapters_change_the_image_not_only_the_template(demo_engine) -> None:
    # The base task uses the bare prompt; with the same text through interior's adapters it must differ.
    base = demo_engine.generate(GenerationRequest(prompt="interior photo of x", task="base", seed=3))
    interior = demo_engine.generate(GenerationRequest(prompt="x", task="interior", seed=3))
    assert base.params.full_prompt == interior.params.full_prompt
    assert np.abs(pixels(base) - pixels(interior)).max() > 0


def test_switching_away_and_back_is_pixel_identical(demo_engine) -> None:
    request = GenerationRequest(prompt="a kitchen", task="interior", seed=42)
    first = pixels(demo_engine.generate(request))
    demo_engine.switch_task("floorplan")
    demo_engine.generate(GenerationRequest(prompt="a kitchen", task="floorplan", seed=42))
    demo_engine.switch_task("base")
    again = pixels(demo_engine.generate(request))
    assert np.array_equal(first, again)


def test_switch_returns_its_duration_and_never_reloads(demo_engine) -> None:
    demo_engine.switch_task("floorplan")  # both tasks' adapters read once, whatever ran before
    demo_engine.switch_task("interior")
    pipe = demo_engine.pipeline
    unet_weight = next(pipe.unet.parameters())
    switch = demo_engine.switch_task("floorplan")
    assert switch.task == "floorplan" and switch.adapters == (("floorplan", 1.0),)
    assert switch.duration_ms > 0 and switch.loaded_from_disk == ()
    assert demo_engine.pipeline is pipe and next(pipe.unet.parameters()) is unet_weight
    assert set(demo_engine.loras.resident) == {"interior", "floorplan"}


def test_base_task_disables_lora_exactly(demo_engine) -> None:
    demo_engine.switch_task("base")
    assert demo_engine.loras.active == ()
    from spatiora_tui.engine.api import GenerationRequest as R

    with_none = pixels(demo_engine.generate(R(prompt="y", task="base", seed=5)))
    demo_engine.switch_task("interior")
    again = pixels(demo_engine.generate(R(prompt="y", task="base", seed=5)))
    assert np.array_equal(with_none, again)


def test_previews_stream_every_n_steps(demo_engine) -> None:
    seen: list[StepPreview] = []
    result = demo_engine.generate(GenerationRequest(prompt="p", task="floorplan", seed=2, steps=5), on_step=seen.append)
    assert [s.step for s in seen] == [1, 2, 3, 4, 5]
    assert all(s.total == 5 and s.image.size == (8, 8) for s in seen)  # one pixel per latent cell
    assert all(a.elapsed_s <= b.elapsed_s for a, b in itertools.pairwise(seen))
    t = result.timings
    assert len(t.step_ms) == 5 and t.first_preview_ms is not None and t.first_preview_ms <= t.image_ms
    assert t.decode_ms is not None and result.memory.peak_rss_mb > 0 and result.memory.cuda_max_allocated_mb is None


def test_every_operation_runs_on_the_engine_thread(cache_dir, tmp_path) -> None:
    # One OpenMP team for all torch work (engine/thread.py): load, switch and the step callback
    # all run on one thread that is not the caller's.
    from spatiora_tui.engine.local import LocalEngine
    from tests.helpers import small_settings

    threads: set[int] = set()
    eng = LocalEngine(small_settings(tmp_path), cache_dir=cache_dir)
    eng.load(on_progress=lambda _msg: threads.add(threading.get_ident()))
    eng.switch_task("interior")
    caller = threading.Thread(
        target=lambda: eng.generate(
            GenerationRequest(prompt="p", task="floorplan", seed=1),
            on_step=lambda _p: threads.add(threading.get_ident()),
        )
    )
    caller.start()
    caller.join()
    assert len(threads) == 1 and threading.get_ident() not in threads and caller.ident not in threads


def test_load_freezes_what_lives_for_good_and_nothing_after_it(cache_dir, tmp_path) -> None:
    # Full garbage collections walked every object of torch, diffusers and the pipeline (140 ms
    # and more, on whichever thread allocated). Load takes them out of the collector's view once;
    # adapters come later, so what a switch drops is still collected.
    import gc

    from spatiora_tui.engine.local import LocalEngine
    from tests.helpers import small_settings

    gc.unfreeze()
    eng = LocalEngine(small_settings(tmp_path), cache_dir=cache_dir)
    eng.load()
    frozen = gc.get_freeze_count()
    assert frozen > 50_000, f"only {frozen} objects frozen after loading the model"
    eng.switch_task("interior")
    eng.generate(GenerationRequest(prompt="p", task="interior", seed=1))
    eng.switch_task("floorplan")
    # Frozen objects are still freed by reference counting, so the count may only go down.
    assert gc.get_freeze_count() <= frozen, "switches and generations freeze nothing"


def test_preview_every_n_includes_the_last_step(cache_dir, tmp_path) -> None:
    import dataclasses

    from spatiora_tui.config import PreviewSettings
    from spatiora_tui.engine.local import LocalEngine
    from tests.helpers import small_settings

    # Progress at every step; a preview image on every third and the last.
    for method, expected in (("latent2rgb", [3, 6, 7]), ("vae", [3, 6, 7]), ("none", [])):
        settings = small_settings(tmp_path, preview=PreviewSettings(method=method, every_n_steps=3))
        eng = LocalEngine(settings, cache_dir=cache_dir)
        eng.load()
        seen: list[StepPreview] = []
        result = eng.generate(GenerationRequest(prompt="p", task="base", seed=1, steps=7), on_step=seen.append)
        assert [s.step for s in seen] == [1, 2, 3, 4, 5, 6, 7], method
        assert [s.step for s in seen if s.image is not None] == expected, method
        assert (result.timings.first_preview_ms is None) == (method == "none")
        if method == "vae":
            assert seen[2].image.size == (64, 64)
        dataclasses.replace(settings)  # settings stay frozen and reusable


def test_cancel_stops_within_one_step_and_returns_no_image(demo_engine) -> None:
    cancel = threading.Event()

    def on_step(preview: StepPreview) -> None:
        if preview.step == 2:
            cancel.set()

    result = demo_engine.generate(
        GenerationRequest(prompt="p", task="interior", seed=3, steps=10), on_step=on_step, cancel=cancel
    )
    assert result.cancelled and result.image is None
    assert result.steps_done == 3, "the step running when cancel was set finishes; no further one starts"
    assert result.timings.image_ms is None and result.timings.decode_ms is None


def test_cancel_before_start_runs_nothing(demo_engine) -> None:
    cancel = threading.Event()
    cancel.set()
    result = demo_engine.generate(GenerationRequest(prompt="p", task="interior", seed=3), cancel=cancel)
    assert result.cancelled and result.steps_done == 0 and result.image is None


def test_random_seed_is_recorded_and_reproducible(demo_engine) -> None:
    first = demo_engine.generate(GenerationRequest(prompt="p", task="floorplan"))
    assert 0 <= first.params.seed < 2**32
    again = demo_engine.generate(GenerationRequest(prompt="p", task="floorplan", seed=first.params.seed))
    assert np.array_equal(pixels(first), pixels(again))


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc", "heun"])
def test_every_scheduler_runs_and_previews(demo_engine, scheduler: str) -> None:
    seen: list[StepPreview] = []
    result = demo_engine.generate(
        GenerationRequest(prompt="p", task="base", seed=1, steps=3, scheduler=scheduler), on_step=seen.append
    )
    assert result.params.scheduler == scheduler and result.image is not None
    # Heun is second order: 3 steps are 5 model evaluations, and progress counts evaluations.
    total = 5 if scheduler == "heun" else 3
    assert [s.step for s in seen] == list(range(1, total + 1))
    assert {s.total for s in seen} == {total} and result.steps_done == total
    # The same seed gives the same image, ancestral samplers (fresh noise every step) included.
    again = demo_engine.generate(GenerationRequest(prompt="p", task="base", seed=1, steps=3, scheduler=scheduler))
    assert np.array_equal(pixels(result), pixels(again)), f"{scheduler} does not reproduce its seed"


def test_overrides_and_bad_requests(demo_engine) -> None:
    result = demo_engine.generate(
        GenerationRequest(prompt="p", task="base", seed=1, width=96, height=64, guidance=2, negative_prompt="dark")
    )
    assert result.image.size == (96, 64) and result.params.guidance == 2.0
    assert result.params.negative_prompt == "dark"
    with pytest.raises(EngineError, match="width must be a multiple of 8"):
        demo_engine.generate(GenerationRequest(prompt="p", task="base", width=100))
    with pytest.raises(EngineError, match="unknown task 'nope'"):
        demo_engine.generate(GenerationRequest(prompt="p", task="nope"))
    with pytest.raises(EngineError, match="seed must be between"):
        demo_engine.generate(GenerationRequest(prompt="p", task="base", seed=-1))


def test_a_long_prompt_is_read_whole_in_chunks(demo_engine) -> None:
    # Past the encoder's 75 tokens the prompt goes on in a second chunk, as in AUTOMATIC1111:
    # the last word still changes the image (it was cut before), and nothing warns.
    images = []
    for last in ("red", "blue"):
        prompt = " ".join(["oak"] * 100) + " " + last
        result = demo_engine.generate(GenerationRequest(prompt=prompt, task="base", seed=1, steps=1))
        assert not result.warnings
        images.append(np.asarray(result.image).astype(np.int16))
    assert np.abs(images[0] - images[1]).max() > 0, "the words after token 75 reach the model"


def test_generate_before_load_is_a_clear_error(cache_dir, tmp_path) -> None:
    from spatiora_tui.engine.local import LocalEngine
    from tests.helpers import small_settings

    eng = LocalEngine(small_settings(tmp_path), cache_dir=cache_dir)
    with pytest.raises(EngineError, match="not loaded"):
        eng.generate(GenerationRequest(prompt="p", task="base"))


def test_image_to_image_runs_on_the_loaded_components_with_the_tasks_adapters(demo_engine, tmp_path) -> None:
    from PIL import Image

    init = tmp_path / "sketch.png"
    Image.new("RGB", (64, 64), (250, 250, 250)).save(init)
    seen: list[StepPreview] = []
    ask = GenerationRequest(prompt="p", task="floorplan", seed=2, steps=6, init_image=str(init), strength=0.5)
    with_adapter = demo_engine.generate(ask, on_step=seen.append)
    pipe, img2img = demo_engine.pipeline, demo_engine._img2img_pipe()
    assert img2img is not pipe
    for name, component in pipe.components.items():
        if name != "scheduler":  # each run makes its own from the model's config
            assert img2img.components[name] is component, f"{name} was copied, not shared"
    assert [s.step for s in seen] == [1, 2, 3] and all(s.image is not None for s in seen)  # previews stream
    without = demo_engine.generate(dataclasses.replace(ask, task="base"))
    assert not np.array_equal(pixels(with_adapter), pixels(without)), "the task's adapter took part"
    assert demo_engine._img2img_pipe() is img2img, "built once, then kept"


def test_the_img2img_pipeline_neither_copies_nor_casts_the_shared_model(cache_dir) -> None:
    # diffusers' from_pipe casts every component to float32 unless told otherwise: on a GPU the
    # shared fp16 model was upcast in place (2 GB more, found by the GPU check). bfloat16 on the
    # CPU stands for fp16 here.
    import torch

    from spatiora_tui.config import ModelSettings
    from spatiora_tui.engine.generate import img2img_pipeline
    from spatiora_tui.engine.pipeline import load_pipeline

    pipe, _, _ = load_pipeline(ModelSettings(source="demo", device="cpu", dtype="fp32"), cache_dir, print)
    pipe.to(dtype=torch.bfloat16)
    before = {name: (p.dtype, p.data_ptr()) for name, p in pipe.unet.named_parameters()}
    img2img = img2img_pipeline(pipe)
    after = {name: (p.dtype, p.data_ptr()) for name, p in pipe.unet.named_parameters()}
    assert after == before and img2img.unet is pipe.unet
    assert {p.dtype for p in pipe.text_encoder.parameters()} == {torch.bfloat16}
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"


def test_out_of_memory_advice_suggests_fp16_only_to_a_model_not_in_it() -> None:
    from spatiora_tui.engine.generate import _oom_advice
    from tests.helpers import make_result

    params = make_result().params
    assert 'dtype = "fp16"' in _oom_advice("denoise", params, on_cuda=True, dtype="fp32")
    assert "dtype" not in _oom_advice("denoise", params, on_cuda=True, dtype="fp16")
    assert "GPU" not in _oom_advice("denoise", params, on_cuda=False)


def test_the_leak_watchdog_counts_from_after_the_first_image(cache_dir, tmp_path, monkeypatch) -> None:
    # On a GPU the first image loads CUDA's kernel libraries: +570 MB of RSS that stays, which
    # the watchdog took for a leak after every user's first image (the H200 run showed it).
    from spatiora_tui.engine import local
    from spatiora_tui.hw.watchdog import MemoryReading
    from spatiora_tui.notices import NoticeKind, of_kind
    from tests.helpers import small_settings

    engine = local.LocalEngine(small_settings(tmp_path), cache_dir=cache_dir)
    engine.load()
    engine.switch_task("interior")
    engine.watchdog.set_baseline(MemoryReading(1000.0))
    rss = [1000.0 + 570.0 + engine.loras.held_mb()[0]]
    monkeypatch.setattr(local, "read_memory", lambda: MemoryReading(rss[0]))
    ask = GenerationRequest(prompt="p", task="interior", seed=1, steps=2)
    leaks = lambda: of_kind(engine.generate(ask).warnings, NoticeKind.MEMORY_LEAK)  # noqa: E731
    assert leaks() == [], "the first image's one-time growth is not a leak"
    assert leaks() == []
    rss[0] += 400.0  # later growth still is
    assert len(leaks()) == 1
