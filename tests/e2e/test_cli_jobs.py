"""`spatiora generate --count` and `spatiora queue`, end to end on the demo model, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.outputs import read_metadata
from tests.e2e.test_cli import SMALL_CONFIG, assert_one_line_failure, spatiora
from tests.fake_engine import FakeEngine
from tests.helpers import small_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path, cache_dir: Path) -> Path:
    (tmp_path / "config.toml").write_text(SMALL_CONFIG, encoding="utf-8")
    return tmp_path


def test_generate_count_saves_each_image_and_a_contact_sheet(project: Path) -> None:
    out = project / "out"
    proc = spatiora("generate", "--count", "3", "--seed", "50", "a loft", "--out", str(out), cwd=project)
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.split()]
    assert len(paths) == 4 and paths[-1].stem.endswith("-batch") and all(p.exists() for p in paths)
    seeds = [read_metadata(p).spatiora["request"]["seed"] for p in paths[:3]]
    assert seeds == [50, 51, 52]
    with Image.open(paths[-1]) as sheet:
        assert sheet.size == (2 * 64 + 4, 2 * 64 + 4)
    assert "3 of 3 image(s) saved" in proc.stderr and "contact sheet:" in proc.stderr


def test_generate_count_out_of_range_is_a_usage_error(project: Path) -> None:
    proc = spatiora("generate", "--count", "0", "a loft", cwd=project)
    assert_one_line_failure(proc, 2, "--count must be between 1 and 100, got 0")


def leave_queue(state: Path, project: Path, *prompts: str) -> None:
    settings = small_settings(project)
    engine = FakeEngine(settings)
    engine.load()
    session = Session(engine, settings, store=QueueStore(state / "queues"))
    for prompt in prompts:
        session.submit(GenerationRequest(prompt=prompt, task="floorplan", seed=9))
    assert session.flush()
    session.close()


def test_queue_lists_runs_and_clears_what_ended_sessions_left(project: Path) -> None:
    state = Path(os.environ["SPATIORA_STATE_DIR"])
    env = {"SPATIORA_STATE_DIR": str(state)}
    leave_queue(state, project, "left behind", "and another")
    listed = spatiora("queue", "list", cwd=project, env=env)
    assert listed.returncode == 0 and "floorplan  seed 9  left behind" in listed.stdout
    assert len(listed.stdout.splitlines()) == 2
    ran = spatiora("queue", "run", cwd=project, env=env)
    assert ran.returncode == 0, ran.stderr
    assert "2 saved, 0 failed, 0 still queued" in ran.stderr
    assert len([line for line in ran.stdout.split() if line.endswith(".png")]) == 2
    assert list((state / "queues").glob("queue-*.json")) == []
    leave_queue(state, project, "to clear")
    refused = spatiora("queue", "clear", cwd=project, env=env)
    assert_one_line_failure(refused, 2, "add --yes")
    cleared = spatiora("queue", "clear", "--yes", cwd=project, env=env)
    assert cleared.returncode == 0 and "deleted 1 queued job(s)" in cleared.stderr
    assert list((state / "queues").glob("queue-*.json")) == []
    empty = spatiora("queue", cwd=project, env=env)
    assert empty.returncode == 0 and "no queued jobs" in empty.stderr


def test_queue_run_keeps_a_job_for_a_task_that_is_gone_as_failed_and_says_so(project: Path) -> None:
    state = Path(os.environ["SPATIORA_STATE_DIR"])
    folder = state / "queues"
    folder.mkdir(parents=True)
    record = {"request": {"prompt": "old", "task": "removed-task"}}
    (folder / "queue-old.json").write_text(json.dumps({"format": 1, "jobs": [record]}))
    ran = spatiora("queue", "run", cwd=project, env={"SPATIORA_STATE_DIR": str(state)})
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert "unknown task 'removed-task'" in ran.stderr and "0 saved, 1 failed" in ran.stderr
    # The user's prompt is kept, marked failed with its reason; the next run retries it.
    listed = spatiora("queue", "list", cwd=project, env={"SPATIORA_STATE_DIR": str(state)})
    assert "removed-task" in listed.stdout and "old" in listed.stdout and "failed: " in listed.stdout
    again = spatiora("queue", "run", cwd=project, env={"SPATIORA_STATE_DIR": str(state)})
    assert "retrying 1 job(s) that failed before" in again.stderr and "0 saved, 1 failed" in again.stderr
    kept = [json.loads(p.read_text())["jobs"] for p in folder.glob("queue-*.json")]
    assert [[job["request"]["prompt"] for job in jobs] for jobs in kept] == [["old"]], "kept once, not twice"
    assert not list(folder.glob(".*.partial")) and len(list(folder.glob("*.lock"))) <= 1


def test_sweep_saves_each_cell_and_a_labelled_grid(project: Path) -> None:
    out = project / "out"
    proc = spatiora(
        "sweep",
        "--x",
        "weight:floorplan=0.2,1.0",
        "--y",
        "seed=3,4",
        "--task",
        "floorplan",
        "a flat",
        "--out",
        str(out),
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.split()]
    assert len(paths) == 5 and paths[-1].stem.endswith("-sweep")
    requests = [read_metadata(p).spatiora["request"] for p in paths[:4]]
    assert [(r["seed"], r["prompt"]) for r in requests] == [
        (3, "a flat <lora:floorplan:0.2>"),
        (3, "a flat <lora:floorplan:1>"),
        (4, "a flat <lora:floorplan:0.2>"),
        (4, "a flat <lora:floorplan:1>"),
    ]
    adapters = [read_metadata(p).spatiora["adapters"] for p in paths[:2]]
    assert [a[0]["weight"] for a in adapters] == [0.2, 1.0], "the weight axis reached the adapter"
    assert "sweep of 4 images (2 weight:floorplan x 2 seed)" in proc.stderr and "grid:" in proc.stderr
    assert "weight:floorplan=0.2 · seed=3" in proc.stderr


@pytest.mark.parametrize(
    ("axes", "words"),
    [
        (["--x", "colour=red"], "colour: not an axis"),
        (["--x", "seed=1-200"], "more than 100"),
        (["--x", "task=floorplan,nope"], "task=nope: unknown task"),
        (["--x", "steps=0,2"], "steps=0: must be between 1 and 500"),
        (["--x", "prompt=oak,pine"], "'oak' is not in it"),
    ],
)
def test_a_bad_sweep_is_one_line_before_the_model_loads(project: Path, axes: list[str], words: str) -> None:
    proc = spatiora("sweep", *axes, "a flat", cwd=project)
    assert_one_line_failure(proc, 2, words)
    assert "loading" not in proc.stderr


def sketch(folder: Path, mode: str = "RGB", size: tuple[int, int] = (96, 64)) -> Path:
    from PIL import ImageDraw

    image = Image.new(mode, size, "white" if mode == "RGB" else (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((8, 8, size[0] - 8, size[1] - 8), outline="black", width=3)
    path = folder / f"sketch-{mode}-{size[0]}x{size[1]}.png"
    image.save(path)
    return path


def test_generate_from_an_init_image_records_its_hash_and_strength(project: Path) -> None:
    init = sketch(project)
    proc = spatiora(
        "generate", "--init", str(init), "--strength", "0.5", "--steps", "6", "--task", "floorplan", "a flat",
        "--seed", "4", cwd=project,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (path,) = [Path(line) for line in proc.stdout.split()]
    meta = read_metadata(path)
    fields = meta.a1111["fields"]
    assert fields["Denoising strength"] == "0.5" and fields["Steps"] == "6"
    request = meta.spatiora["request"]
    assert request["init_image"] == str(init) and request["init_image_sha256"].startswith(fields["Init image hash"])
    assert meta.spatiora["timings_ms"]["step_ms"] and len(meta.spatiora["timings_ms"]["step_ms"]) == 3  # 6 x 0.5
    with Image.open(path) as image:
        assert image.size == (96, 64), "no size asked: the init image's own"
    stages = [s["stage"] for s in meta.spatiora["stages"]]
    assert "VAE encode" in stages and stages.index("VAE encode") < stages.index("denoise")


def test_a_sweep_over_strength_starts_each_cell_from_the_init_image(project: Path) -> None:
    init = sketch(project, "RGBA", (64, 64))
    proc = spatiora("sweep", "--x", "strength=0.5,1", "--init", str(init), "--steps", "4", "a flat", cwd=project)
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.split()]
    assert len(paths) == 3 and paths[-1].stem.endswith("-sweep")
    assert [read_metadata(p).spatiora["request"]["strength"] for p in paths[:2]] == [0.5, 1.0]
    assert "transparency was flattened onto white" in proc.stderr


@pytest.mark.parametrize(
    ("make", "extra", "words"),
    [
        (lambda d: d / "nope.png", [], "does not exist"),
        (lambda d: (d / "notes.png", (d / "notes.png").write_text("hi"))[0], [], "not an image Pillow can read"),
        (lambda d: d, [], "is a folder"),
        (lambda d: sketch(d), ["--strength", "0"], "strength must be above 0"),
        (lambda d: sketch(d), ["--strength", "0.1", "--steps", "5"], "use at least 10 steps"),
    ],
)
def test_bad_init_input_is_one_line_before_the_model_loads(project: Path, make, extra: list[str], words: str) -> None:
    proc = spatiora("generate", "--init", str(make(project)), *extra, "a flat", cwd=project)
    assert_one_line_failure(proc, 2, words)
    assert "loading" not in proc.stderr
