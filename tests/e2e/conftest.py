"""Fixtures of the end-to-end tests: a real sshd on a loopback port with throwaway keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.sshd import running_sshd
from tests.e2e.terminals import require


@pytest.fixture
def sshd(tmp_path: Path):
    require("/usr/sbin/sshd", "ssh", "ssh-keygen")
    with running_sshd(tmp_path / "ssh") as port_key:
        yield port_key
