"""process_age_s: the time since this process started, to about 10 ms (psutil's create_time is
off by up to a second, which made the first launch figures wrong)."""

from __future__ import annotations

import subprocess
import sys


def test_a_new_process_knows_its_age() -> None:
    code = "import time; time.sleep(0.5)\nfrom spatiora_tui.hw import process_age_s\nprint(process_age_s())"
    age = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    # At least the sleep; at most the sleep plus a generous interpreter start on a busy machine.
    assert 0.5 <= age < 3.0
