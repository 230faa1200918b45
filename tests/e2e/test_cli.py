"""The `spatiora` command end to end, in subprocesses, offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spatiora_tui.outputs import read_metadata
from tests.e2e.terminals import RANDOM_MODEL, tasks_config
from tests.helpers import REPO

pytestmark = pytest.mark.slow

SMALL_TASKS = tasks_config(steps=3, size=64)
SMALL_CONFIG = RANDOM_MODEL + SMALL_TASKS


def spatiora(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("SPATIORA_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "spatiora_tui", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_failure(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("spatiora: error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture
def project(tmp_path: Path, cache_dir: Path) -> Path:
    """A folder with a small config.toml, used as the working directory."""
    (tmp_path / "config.toml").write_text(SMALL_CONFIG, encoding="utf-8")
    return tmp_path


@pytest.fixture
def in_process(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`spatiora ARGS` run by cli.main in this process, in `project` (the argument and config
    errors: the exit-code contract itself is checked in a subprocess above and below)."""
    from spatiora_tui.cli import main

    monkeypatch.chdir(project)
    monkeypatch.delenv("SPATIORA_DEBUG", raising=False)

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["spatiora", *args], code, out, err)

    return run


def test_generate_floorplan_with_the_shipped_config(tmp_path: Path, cache_dir: Path) -> None:
    # Exactly the command, run in the repository (./config.toml), output redirected.
    out = tmp_path / "out"
    proc = spatiora(
        "generate", "--task", "floorplan", "open-plan flat", cwd=REPO, env={"SPATIORA_OUTPUT_DIR": str(out)}
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.parent == out and path.is_file()
    assert "model: spatiora-demo · SD 1.x" in proc.stderr and "step 20/20" in proc.stderr
    assert "random weights" not in proc.stderr  # the trained demo model
    assert "task: floorplan · adapters: floorplan@1" in proc.stderr
    meta = read_metadata(path)
    assert meta.a1111["fields"]["Steps"] == "20" and meta.a1111["fields"]["Sampler"] == "Euler"
    assert meta.a1111["fields"]["Size"] == "64x64" and meta.a1111["fields"]["Model"] == "spatiora-demo"
    assert meta.a1111["prompt"].startswith("2D architectural floor plan of open-plan flat")
    assert meta.spatiora["request"]["task"] == "floorplan" and meta.spatiora["model"]["random_weights"] is False
    assert meta.spatiora["adapters"][0]["name"] == "floorplan"


def test_generate_options_and_out_file(project: Path) -> None:
    target = project / "renders" / "mine.png"
    proc = spatiora(
        "generate",
        "-t",
        "interior",
        "--seed",
        "7",
        "--steps",
        "2",
        "--width",
        "72",
        "--scheduler",
        "ddim",
        "--out",
        str(target),
        "a loft",
        cwd=project,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == target
    fields = read_metadata(target).a1111["fields"]
    assert (
        fields["Seed"] == "7" and fields["Steps"] == "2" and fields["Size"] == "72x64" and fields["Sampler"] == "DDIM"
    )


def test_tasks_and_version(project: Path) -> None:
    proc = spatiora("tasks", cwd=project)
    assert proc.returncode == 0 and "interior" in proc.stdout and "floorplan@1" in proc.stdout
    version = spatiora("--version", cwd=project)
    assert version.returncode == 0 and version.stdout.startswith("spatiora ")


def test_doctor_reports_versions_and_no_problem(project: Path) -> None:
    proc = spatiora("doctor", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for word in ("python", "torch", "diffusers", "peft", "textual", "NVML", "model"):
        assert word in proc.stdout, word
    # The NVML row tells the truth about this machine: the driver's version where an NVIDIA driver
    # is installed (its /proc entry, read here without NVML), "unavailable" where none is.
    nvml = next(line for line in proc.stdout.splitlines() if line.strip().startswith("NVML"))
    driver = Path("/proc/driver/nvidia/version")
    if driver.exists():
        version = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", driver.read_text().splitlines()[0]).group(1)
        assert f"driver {version}" in nvml and "GPU(s)" in nvml, nvml
    else:
        assert "unavailable" in nvml and "no NVIDIA GPU or driver" in nvml, nvml


def test_no_subcommand_without_a_terminal_points_to_generate(project: Path) -> None:
    proc = spatiora(cwd=project)
    assert_one_line_failure(proc, 2, "interactive terminal", "spatiora generate")


def test_unknown_task(in_process) -> None:
    assert_one_line_failure(
        in_process("generate", "--task", "kitchen", "x"), 2, "unknown task 'kitchen'", "interior, floorplan"
    )


def test_width_not_a_multiple_of_8(in_process) -> None:
    assert_one_line_failure(in_process("generate", "--width", "500", "x"), 2, "width", "multiple of 8", "496 or 504")


def test_empty_prompt(in_process) -> None:
    assert_one_line_failure(in_process("generate", "  "), 2, "prompt is empty")


def test_bad_config_names_file_and_key(project: Path, in_process) -> None:
    (project / "config.toml").write_text('[model]\ndevice = "gpu"\n')
    assert_one_line_failure(
        in_process("tasks"), 2, str(project / "config.toml"), "model.device", "auto, cuda, mps, cpu"
    )


def test_missing_model_path(project: Path, in_process) -> None:
    (project / "config.toml").write_text('[model]\nsource = "./models/nothing-here"\n' + SMALL_TASKS)
    assert_one_line_failure(in_process("generate", "x"), 1, "nothing-here", "model.source")


def test_hub_id_offline_names_the_model(project: Path, in_process) -> None:
    (project / "config.toml").write_text('[model]\nsource = "nobody-real/no-such-model"\n' + SMALL_TASKS)
    assert_one_line_failure(in_process("generate", "x"), 1, "nobody-real/no-such-model")


def test_pickle_checkpoint_is_refused(project: Path, in_process) -> None:
    (project / "model.ckpt").write_bytes(b"\x80\x04junk")
    (project / "config.toml").write_text('[model]\nsource = "model.ckpt"\n' + SMALL_TASKS)
    assert_one_line_failure(in_process("generate", "x"), 1, "model.ckpt", "arbitrary code", "allow_pickle = true")


def test_pickle_checkpoint_with_allow_pickle_is_read_and_a_broken_one_named(project: Path, in_process) -> None:
    (project / "model.ckpt").write_bytes(b"\x80\x04junk")
    (project / "config.toml").write_text(
        '[model]\nsource = "model.ckpt"\n[security]\nallow_pickle = true\n' + SMALL_TASKS
    )
    assert_one_line_failure(in_process("generate", "x"), 1, "model.ckpt", "not a readable checkpoint")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"plain text, not a model", ["model.safetensors", "not a readable .safetensors checkpoint"]),
        (None, ["model.safetensors", "holds no Stable Diffusion UNet", "adapters folder"]),  # a LoRA as the model
    ],
)
def test_a_file_that_is_not_a_checkpoint(
    project: Path, cache_dir: Path, in_process, content: bytes | None, fragments: list[str]
) -> None:
    target = project / "model.safetensors"
    if content is None:
        import shutil

        from spatiora_tui.engine.demo import ensure_demo

        shutil.copy(ensure_demo(cache_dir) / "adapters" / "interior.safetensors", target)
    else:
        target.write_bytes(content)
    (project / "config.toml").write_text('[model]\nsource = "model.safetensors"\n' + SMALL_TASKS)
    assert_one_line_failure(in_process("generate", "x"), 1, *fragments)


def test_corrupt_adapter_file(project: Path) -> None:
    (project / "adapters").mkdir()
    (project / "adapters" / "interior.safetensors").write_bytes(b"\x00" * 100)
    out = project / "out"
    proc = spatiora("generate", "--task", "interior", "x", cwd=project, env={"SPATIORA_OUTPUT_DIR": str(out)})
    assert_one_line_failure(proc, 1, "adapter 'interior'", "not a valid .safetensors")
    assert not out.exists() or not any(out.iterdir()), "nothing saved"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_cancels_cleanly_and_saves_nothing(project: Path) -> None:
    out = project / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SPATIORA_OUTPUT_DIR": str(out)}
    proc = subprocess.Popen(
        # Long enough (1000 UNet calls) that the image cannot be finished before the signal lands,
        # even when a busy machine delays this test between reading the line and sending it.
        [sys.executable, "-m", "spatiora_tui", "generate", "--steps", "500", "--scheduler", "heun", "x"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As in a terminal's foreground job: a suite started in the background (`make test &`)
        # hands its children SIGINT ignored, and they rightly keep ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.strip().startswith("step "):
            break
        assert time.monotonic() < deadline, "no progress line"
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert "cancelled after" in rest and "nothing saved" in rest and "Traceback" not in rest
    assert not out.exists() or not any(out.iterdir())


def test_disk_full_keeps_the_image_in_the_cache_and_says_where(project: Path, cache_dir: Path) -> None:
    out = project / "out"
    proc = spatiora(
        "generate", "x", cwd=project, env={"SPATIORA_OUTPUT_DIR": str(out), "SPATIORA_FAILPOINTS": "save=enospc"}
    )
    assert_one_line_failure(proc, 1, "could not write to", "the disk is full", "save again")
    kept = Path(proc.stdout.strip())
    assert kept.parent == cache_dir / "unsaved" and kept.is_file(), proc.stderr
    assert f"the image was kept in {kept}" in proc.stderr
    assert read_metadata(kept).spatiora["request"]["prompt"] == "x"
    assert not out.exists() or not list(out.glob("*.png"))
    kept.unlink()


def test_a_bad_failpoint_setting_is_a_usage_error(project: Path) -> None:
    proc = spatiora("tasks", cwd=project, env={"SPATIORA_FAILPOINTS": "nowhere=oom"})
    assert_one_line_failure(proc, 2, "SPATIORA_FAILPOINTS", "unknown failpoint 'nowhere'")


def test_the_cli_module_runs_as_a_script(project: Path) -> None:
    # `python -m spatiora_tui.cli` as well as `python -m spatiora_tui` and the `spatiora` script.
    proc = subprocess.run(
        [sys.executable, "-m", "spatiora_tui.cli", "tasks"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "floorplan@1" in proc.stdout


def test_eval_scores_each_task_and_the_base_model(project: Path) -> None:
    grid = project / "grid.png"
    proc = spatiora("eval", "--prompts", "2", "--json", "eval.json", "--grid", str(grid), cwd=project)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| task",
        "| interior",
        "| floorplan",
        "| interior, no adapter",
        "| floorplan, no adapter",
        "| base (no adapter)",
        "| base, no prompt",
    ]
    import json

    figures = json.loads((project / "eval.json").read_text(encoding="utf-8"))
    assert [row["images"] for row in figures] == [2] * 6
    assert all(abs(row["plans %"] + row["rooms %"] - 100) < 1e-9 for row in figures)
    from PIL import Image

    assert Image.open(grid).size == (2 * 128, 6 * 128)  # 2 images a row, 64 px shown at 2x


def test_eval_refuses_an_unknown_task(project: Path) -> None:
    assert_one_line_failure(spatiora("eval", "--tasks", "kitchen", cwd=project), 2, "no task named kitchen")
