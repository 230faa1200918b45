"""`spatiora bench` on the demo arch: every column of the paper's table and ours, from one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spatiora_tui import failpoints
from spatiora_tui.cli import main

ROW_KEYS = {
    "task",
    "ttfp_ms",
    "total_ms",
    "throughput_img_min",
    "peak_gpu_mb",
    "peak_cpu_mb",
    "preview_overhead_ratio",
    "ttfi_ms",
    "switch_ms",
    "stages",
    "total_ms_no_previews",
}


def test_bench_on_the_demo_arch_fills_every_column(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    code = main(
        [
            "bench",
            "--arch",
            "demo",
            "--runs",
            "1",
            "--steps",
            "2",
            "--size",
            "64x64",
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    rows = data["rows"]
    assert [r["task"] for r in rows] == ["interior", "floorplan"]
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert 0 < row["ttfp_ms"] <= row["ttfi_ms"] <= row["total_ms"]
        assert row["throughput_img_min"] == pytest.approx(60_000 / row["total_ms"])
        assert row["peak_cpu_mb"] > 100  # the loaded model at least
        assert row["preview_overhead_ratio"] > 0 and row["total_ms_no_previews"] > 0
        assert row["switch_ms"] > 0, "every request switches task, as in the paper"
        assert [s["stage"] for s in row["stages"]] == ["adapter switch", "text encode", "denoise", "VAE decode", "save"]
        assert all(s["median_ms"] > 0 and s["peak_rss_mb"] > 0 for s in row["stages"])
        # Without CUDA the GPU column is empty, not made up; with it, the peak is measured.
        if torch.cuda.is_available():
            assert row["peak_gpu_mb"] > 0
        else:
            assert row["peak_gpu_mb"] is None
    assert data["load_ms"] > 0 and data["paper"][0]["total_ms"] == 658_719
    for fragment in ("interior", "floorplan", "preview ovh", "per-stage peaks", "denoise"):
        assert fragment in printed
    table = out_md.read_text()
    assert "| spatiora | interior |" in table and "| floorplan | VAE decode |" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "65x64"], "multiples of 8"),
        (["--size", "big"], "WIDTHxHEIGHT"),
        (["--runs", "0"], "--runs and --steps"),
        (["--tasks", "nope"], "nope"),
        (["--tasks", ","], "--tasks names no task"),
    ],
)
def test_bench_refuses_bad_arguments_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", *args])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err


def test_an_engine_failure_is_a_failed_run_not_a_usage_error(
    cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CLI's contract: 2 for bad arguments, 1 for a run that failed.
    failpoints.arm("load", "oom")
    code = main(["bench", "--arch", "demo", "--runs", "1", "--steps", "1", "--size", "64x64"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "out of memory while loading" in err and "Traceback" not in err
