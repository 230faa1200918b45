"""A real sshd on a loopback port with throwaway keys (the e2e tests' fixture, and the
benchmarks that measure what a dropped SSH link costs)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[tuple[int, Path]]:
    """An sshd on 127.0.0.1 with its keys in `folder` (made here): (port, the user's key);
    stopped on exit."""
    keys = folder
    keys.mkdir(mode=0o700)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "user_key.pub").read_text())
    os.chmod(keys / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {keys / 'host_key'}",
                f"AuthorizedKeysFile {keys / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                f"PidFile {keys / 'sshd.pid'}",
                "PrintMotd no",
                "AcceptEnv LANG LC_*",
            ]
        )
        + "\n"
    )
    with open(keys / "sshd.log", "w") as log:  # sshd keeps its own copy of the descriptor
        server = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=log
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start: " + (keys / "sshd.log").read_text())
            time.sleep(0.1)
        yield port, keys / "user_key"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def ssh_argv(port: int, key: Path, terminal: bool = False) -> list[str]:
    """ssh to this machine through that sshd, as the user running this, without a prompt
    (`terminal`: with a terminal on the far side, -tt)."""
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    return [
        "ssh",
        *(["-tt"] if terminal else []),
        "-i",
        str(key),
        "-p",
        str(port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        f"{user}@127.0.0.1",
    ]
