"""The paper's table as `spatiora bench` shows it: a terminal table, Markdown for the docs, JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from spatiora_tui.bench.table import BenchResult
from spatiora_tui.hw.telemetry import format_mb, format_ms

#: The paper's Table 1 (Spatiora pilot; their hardware, SD 1.5-based, 512x512 as we read it).
PAPER_ROWS = (
    {
        "task": "interior",
        "ttfi_ms": 657_766,
        "total_ms": 658_719,
        "throughput_img_min": 0.09,
        "peak_gpu_mb": 5_430,
        "peak_cpu_mb": 4_293,
    },
    {
        "task": "floorplan",
        "ttfi_ms": 511_296,
        "total_ms": 511_296,
        "throughput_img_min": 0.12,
        "peak_gpu_mb": 5_430,
        "peak_cpu_mb": 4_296,
    },
)


def _cell(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown_table(result: BenchResult, with_paper: bool = True) -> str:
    """The comparison table (paper rows first when asked), then the per-stage peaks."""
    r = result
    lines = [
        f"`spatiora bench --arch {r.arch} --runs {r.runs} --steps {r.steps} --size {r.width}x{r.height}` · "
        f"{r.model} · {r.device} {r.dtype} · rank-{r.rank} adapter per task · previews {r.preview}",
        "",
        "| source | task | first preview ms | final image ms | total ms | img/min | peak GPU MB | peak CPU MB "
        "| switch ms | preview overhead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if with_paper:
        for p in PAPER_ROWS:
            lines.append(
                f"| paper (pilot) | {p['task']} | — | {p['ttfi_ms']:,} | {p['total_ms']:,} | {p['throughput_img_min']} "
                f"| ~{p['peak_gpu_mb']:,} | ~{p['peak_cpu_mb']:,} | — | — |"
            )
    for row in r.rows:
        lines.append(
            f"| spatiora | {row.task} | {_cell(row.ttfp_ms)} | {row.ttfi_ms:,.0f} | {row.total_ms:,.0f} "
            f"| {row.throughput_img_min:.2f} | {_cell(row.peak_gpu_mb)} | {row.peak_cpu_mb:,.0f} "
            f"| {row.switch_ms:.1f} | {row.preview_overhead_ratio:.3f} |"
        )
    lines += ["", "| task | stage | median ms | peak CPU MB | peak GPU MB |", "|---|---|---|---|---|"]
    lines.append(f"| — | load base | {r.load_ms:,.0f} | {r.load_peak_rss_mb:,.0f} | — |")
    for row in r.rows:
        for s in row.stages:
            lines.append(
                f"| {row.task} | {s.stage} | {s.median_ms:,.1f} | {s.peak_rss_mb:,.0f} | {_cell(s.peak_gpu_mb)} |"
            )
    return "\n".join(lines) + "\n"


def print_table(result: BenchResult) -> None:
    r = result
    print(
        f"spatiora bench · {r.model} · {r.device} {r.dtype} · {r.width}x{r.height} · {r.steps} steps · "
        f"{r.runs} run(s) per task · previews {r.preview}"
    )
    print(f"load base {format_ms(r.load_ms)} (peak RSS {format_mb(r.load_peak_rss_mb)})")
    header = (
        f"{'':10s} {'task':10s} {'1st preview':>12s} {'final image':>12s} {'total':>12s} {'img/min':>8s} "
        f"{'peak GPU MB':>12s} {'peak CPU MB':>12s} {'switch ms':>10s} {'preview ovh':>12s}"
    )
    print(header)
    if r.arch != "demo":
        for p in PAPER_ROWS:
            print(
                f"{'paper':10s} {p['task']:10s} {'—':>12s} {p['ttfi_ms']:>12,} {p['total_ms']:>12,} "
                f"{p['throughput_img_min']:>8} {'~' + format(p['peak_gpu_mb'], ','):>12s} "
                f"{'~' + format(p['peak_cpu_mb'], ','):>12s} {'—':>10s} {'—':>12s}"
            )
    for row in r.rows:
        print(
            f"{'spatiora':10s} {row.task:10s} {_cell(row.ttfp_ms):>12s} {row.ttfi_ms:>12,.0f} {row.total_ms:>12,.0f} "
            f"{row.throughput_img_min:>8.2f} {_cell(row.peak_gpu_mb):>12s} {row.peak_cpu_mb:>12,.0f} "
            f"{row.switch_ms:>10.1f} {row.preview_overhead_ratio:>11.3f}x"
        )
    print(
        "(times in ms, medians over the runs; total = request made -> image saved with metadata; "
        "preview overhead = total with previews every step / without)"
    )
    print("per-stage peaks (median ms · peak CPU MB · peak GPU MB):")
    for row in r.rows:
        cells = [
            f"{s.stage} {format_ms(s.median_ms)} · {s.peak_rss_mb:,.0f} · {_cell(s.peak_gpu_mb)}" for s in row.stages
        ]
        print(f"  {row.task:10s} " + " | ".join(cells))
    for warning in r.warnings:
        print(f"warning: {warning}")


def write_json(result: BenchResult, path: Path) -> None:
    data = dataclasses.asdict(result)
    data["paper"] = list(PAPER_ROWS)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
