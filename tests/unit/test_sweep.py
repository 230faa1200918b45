"""X/Y/Z sweeps: axis parsing, expansion into cells, the queue running them, the labelled grid,
and a sweep surviving a restart with its grid intact."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from spatiora_tui.engine.api import GenerationRequest
from spatiora_tui.jobs.events import GroupFinished
from spatiora_tui.jobs.job import JobKind, JobState
from spatiora_tui.jobs.session import Session
from spatiora_tui.jobs.sheets import sweep_grid
from spatiora_tui.jobs.store import QueueStore
from spatiora_tui.jobs.sweep import SweepError, expand, parse_axis
from spatiora_tui.outputs import read_metadata
from spatiora_tui.prompts import extract_lora_tags, with_lora_weight

BASE = GenerationRequest(prompt="an oak kitchen", task="interior", seed=7)


def run_all(session: Session) -> list:
    events: list = []
    assert session.wants_runner()
    while session.run_next(events.append):
        pass
    return events


@pytest.mark.parametrize(
    ("spec", "kind", "values"),
    [
        ("seed=1,2,3", "seed", ("1", "2", "3")),
        ("seed=10-13", "seed", ("10", "11", "12", "13")),
        ("Steps = 10, 20", "steps", ("10", "20")),
        ("cfg=0,7.5", "guidance", ("0", "7.5")),
        ("sampler=euler_a,DPM++ 2M Karras", "scheduler", ("euler_a", "DPM++ 2M Karras")),
        ("size=512x512,768x512", "size", ("512x512", "768x512")),
        ("task=interior,floorplan", "task", ("interior", "floorplan")),
        ("weight:floorplan=0.2,0.6,1.0", "weight", ("0.2", "0.6", "1.0")),
        ('prompt=oak,"walnut, dark"', "prompt", ("oak", "walnut, dark")),
    ],
)
def test_axes_parse_as_written(spec: str, kind: str, values: tuple[str, ...]) -> None:
    axis = parse_axis(spec)
    assert (axis.kind, axis.values) == (kind, values)
    assert parse_axis(axis.spec) == axis, "an axis reads back from its own spec"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("seed", "KIND=VALUES"),
        ("colour=red", "not an axis"),
        ("seed=", "give values"),
        ("seed=1,,2", "none empty"),
        ("seed=x", "not a whole number"),
        ("seed=5-3", "a range goes up"),
        ("seed=0-1000", "more than 100"),
        ("seed=-1", "not a whole number"),
        ("steps=0", "between 1 and 500"),
        ("guidance=nan", "between 0 and 30"),
        ("guidance=abc", "not a number"),
        ("scheduler=plms", "no such sampler"),
        ("size=500x512", "multiple of 8"),
        ("weight:=1", "name the adapter"),
        ("weight:x=9", "between -5 and 5"),
        ("seed=1,1", "appears twice"),
    ],
)
def test_bad_axes_are_refused_saying_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(SweepError, match=words.replace("(", r"\(")):
        parse_axis(spec)


def test_cells_vary_x_fastest_and_keep_the_base_elsewhere() -> None:
    cells = expand(BASE, [parse_axis("steps=2,3"), parse_axis("guidance=1,5"), parse_axis("task=interior,base")])
    assert len(cells) == 8
    assert [c.index for c in cells[:3]] == [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    assert [(c.request.steps, c.request.guidance, c.request.task) for c in cells[:3]] == [
        (2, 1.0, "interior"),
        (3, 1.0, "interior"),
        (2, 5.0, "interior"),
    ]
    assert cells[-1].request.task == "base" and cells[-1].label == "steps=3 · guidance=5 · task=base"
    assert {c.request.seed for c in cells} == {7} and {c.request.prompt for c in cells} == {BASE.prompt}


def test_prompt_search_replace_is_a1111s() -> None:
    cells = expand(BASE, [parse_axis("prompt=oak,walnut,marble")])
    assert [c.request.prompt for c in cells] == ["an oak kitchen", "an walnut kitchen", "an marble kitchen"]
    assert [c.label for c in cells] == ["oak", "walnut", "marble"]
    with pytest.raises(SweepError, match="'pine' is not in it"):
        expand(BASE, [parse_axis("prompt=pine,oak")])


def test_a_weight_axis_sets_the_adapters_weight_by_tag() -> None:
    cells = expand(BASE, [parse_axis("weight:floorplan=0.2,1")])
    assert [extract_lora_tags(c.request.prompt)[1][0].weight for c in cells] == [0.2, 1.0]
    tagged = "a loft <lora:floorplan:0.5>, wide"
    assert with_lora_weight(tagged, "floorplan", 0.9) == "a loft <lora:floorplan:0.9>, wide"
    assert with_lora_weight("a loft <lora:interior:0.5>", "floorplan", 1) == (
        "a loft <lora:interior:0.5> <lora:floorplan:1>"
    )


def test_sweeps_too_big_or_with_a_repeated_axis_are_refused() -> None:
    with pytest.raises(SweepError, match="200 cells"):
        expand(BASE, [parse_axis("seed=1-100"), parse_axis("steps=1,2")])
    with pytest.raises(SweepError, match="two axes vary seed"):
        expand(BASE, [parse_axis("seed=1,2"), parse_axis("seed=3,4")])
    with pytest.raises(SweepError, match="one to 3 axes"):
        expand(BASE, [parse_axis(f"{k}=1,2") for k in ("seed", "steps", "guidance", "cfg")])


def test_a_sweep_runs_through_the_queue_and_saves_a_labelled_grid(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = session.submit_sweep(BASE, [parse_axis("weight:interior=0.2,1"), parse_axis("seed=1,2,3")])
    assert [j.kind for j in jobs] == [JobKind.SWEEP] * 6 and len({j.group for j in jobs}) == 1
    events = run_all(session)
    assert all(j.state is JobState.DONE and j.path is not None for j in jobs)
    assert [r.seed for r in fake_engine.requests] == [1, 1, 2, 2, 3, 3]
    finished = [e for e in events if isinstance(e, GroupFinished)]
    assert len(finished) == 1 and finished[0].path is not None
    grid = finished[0].path
    assert grid.name.endswith("-sweep.png")
    with Image.open(grid) as image:
        w, h = image.size
    assert w > 2 * 64 and h > 3 * 64, "two columns, three rows, and the label bands"
    meta = read_metadata(grid)
    assert meta.parameters and "Seed: 1" in meta.parameters, "the first cell's A1111 text"
    record = meta.spatiora or {}
    assert record["axes"] == [
        ["weight:interior", ["weight:interior=0.2", "weight:interior=1"]],
        ["seed", ["seed=1", "seed=2", "seed=3"]],
    ]
    assert record["images"] == [str(j.path) for j in jobs]


def test_a_sweep_cell_that_cannot_run_is_refused_before_anything_is_queued(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    with pytest.raises(SweepError, match="task=nope"):
        session.submit_sweep(BASE, [parse_axis("task=interior,nope")])
    assert session.jobs() == []


def test_a_failed_cell_is_a_grey_tile_saying_so(fake_engine, settings) -> None:
    session = Session(fake_engine, settings)
    jobs = session.submit_sweep(BASE, [parse_axis("seed=1,2,3")])
    session.cancel(jobs[1].id)
    events = run_all(session)
    grid = next(e.path for e in events if isinstance(e, GroupFinished))
    assert grid is not None
    with Image.open(grid) as image:
        rgb = image.convert("RGB")
    # The middle column's tile is grey: sample its centre.
    assert rgb.getpixel((rgb.width // 2, rgb.height - 32)) == (224, 224, 224)


def test_the_grid_without_images_is_refused() -> None:
    from spatiora_tui.jobs.sheets import SheetError

    with pytest.raises(SheetError):
        sweep_grid({(0,): "failed"}, (("seed", ("seed=1",)),))


def test_z_makes_one_grid_per_value_stacked() -> None:
    tile = Image.new("RGB", (64, 64), (255, 0, 0))
    axes = (("seed", ("1", "2")), ("steps", ("3", "4")), ("task", ("interior", "floorplan")))
    cells: dict[tuple[int, ...], Image.Image | str] = {
        (x, y, z): tile for x in range(2) for y in range(2) for z in range(2)
    }
    two = sweep_grid(cells, axes)
    flat = sweep_grid({(x, y): tile for x in range(2) for y in range(2)}, axes[:2])
    assert two.height > 2 * flat.height - 64 and two.width == flat.width


def test_a_sweep_left_in_the_queue_file_resumes_with_its_grid(fake_engine, settings, tmp_path: Path) -> None:
    first = Session(fake_engine, settings, store=QueueStore(tmp_path / "state"))
    jobs = first.submit_sweep(BASE, [parse_axis("seed=1,2"), parse_axis("steps=2,3")])
    assert first.wants_runner() and first.run_next()  # one cell done, three waiting
    first.close()
    second = Session(fake_engine, settings, store=QueueStore(tmp_path / "state"))
    count, problems = second.adopt(second.orphans())
    assert (count, problems) == (3, [])
    events = run_all(second)
    grid = next(e.path for e in events if isinstance(e, GroupFinished))
    assert grid is not None
    record = read_metadata(grid).spatiora or {}
    assert record["images"][0] == str(jobs[0].path), "the cell done before the restart is on the grid"
    assert [len(labels) for _, labels in record["axes"]] == [2, 2]
    second.close()
