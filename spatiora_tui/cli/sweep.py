"""`spatiora sweep`: an X/Y/Z sweep (AUTOMATIC1111's X/Y/Z plot) from the command line: each
cell saved with its metadata, then the labelled grid; ctrl+c cancels the running cell and the
rest."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from spatiora_tui.cli.common import UsageError, engine_for
from spatiora_tui.cli.generate import (
    BatchReport,
    add_request_arguments,
    group_outcome,
    on_engine_queue,
    output_target,
    request_from_args,
    run_on_engine_queue,
    run_session,
    start_engine,
)
from spatiora_tui.config import Settings

AXIS_HELP = (
    "an axis KIND=VALUES: seed=1,2,3 (or 1-3) · steps=10,20 · guidance=3,7 · scheduler=euler_a,ddim · "
    "size=512x512,768x512 · task=interior,floorplan · weight:NAME=0.2,0.6,1.0 · "
    "prompt=oak,walnut (Prompt S/R: the first value is replaced by each)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    sweep = sub.add_parser(
        "sweep",
        parents=[common],
        help="an X/Y/Z sweep: one image per combination of the axes' values, and a labelled grid",
        description="Vary up to three settings across a grid of images (AUTOMATIC1111's X/Y/Z plot). "
        "The seed is the same in every cell unless seed is an axis. Each image is saved with its "
        "metadata, then the grid (NAME-sweep.png) with the axes' values as labels.",
        epilog='example: spatiora sweep --x "weight:floorplan=0.2,0.6,1.0" --y "seed=1,2,3" "a two-bedroom flat"',
    )
    add_request_arguments(sweep)
    sweep.add_argument("--x", "-x", required=True, metavar="AXIS", help=AXIS_HELP)
    sweep.add_argument("--y", "-y", metavar="AXIS", help="a second axis (rows of the grid)")
    sweep.add_argument("--z", "-z", metavar="AXIS", help="a third axis (one grid per value, stacked)")
    sweep.set_defaults(run=run)


def run(settings: Settings, args: argparse.Namespace) -> int:
    from spatiora_tui.jobs.sweep import SweepError, parse_axis

    try:
        axes = [parse_axis(spec) for spec in (args.x, args.y, args.z) if spec is not None]
    except SweepError as exc:
        raise UsageError(str(exc)) from None
    with engine_for(settings, args) as (settings, remote):
        return _run(settings, args, axes, remote)


def _run(settings: Settings, args: argparse.Namespace, axes: list[Any], remote: Any) -> int:
    from spatiora_tui.atomic import clean_stale_partials
    from spatiora_tui.jobs.session import Session
    from spatiora_tui.jobs.sweep import SweepError, checked_cells

    task, request = request_from_args(settings, args)
    try:
        checked_cells(settings, request, axes)  # every cell can run: known before the model loads
    except SweepError as exc:
        raise UsageError(str(exc)) from None
    out_dir, out_name = output_target(settings, args.out)
    clean_stale_partials(out_dir)
    engine, telemetry = start_engine(settings, task, remote)
    if on_engine_queue(engine, args):
        telemetry.stop()
        return run_on_engine_queue(engine, request, 1, out_dir, out_name, axes)
    session = Session(engine, settings, telemetry=telemetry, output_dir=out_dir, output_name=out_name)
    try:
        jobs = session.submit_sweep(request, axes)
    except SweepError as exc:
        telemetry.stop()
        raise UsageError(str(exc)) from None
    shape = " x ".join(f"{len(a.values)} {a.title}" for a in axes)
    print(f"sweep of {len(jobs)} images ({shape}), seed {jobs[0].request.seed}", file=sys.stderr)
    _, interrupted = run_session(session, BatchReport(len(jobs), "grid", {job.id: job.label for job in jobs}))
    telemetry.stop()
    return group_outcome(jobs, interrupted)
