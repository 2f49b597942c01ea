"""A real OpenSSH sshd for the SFTP tests, started once per session on a free loopback port.

The server gets a temp ``sshd_config`` (``Subsystem sftp internal-sftp``),
a host key and a user key made by ``ssh-keygen``, and a ``known_hosts`` file
pinning its key as ``[127.0.0.1]:PORT``. It listens on a second port too,
where ``internal-sftp -P remove,rename,posix-rename`` refuses deletes and
renames: the tests run as root, for whom file permissions refuse nothing, so
that port is how a "permission denied on delete" is made real.

It is stopped by its own pid (and the pids of its session children). When
sshd is not installed the tests fail in CI (``CI=true``) and skip loudly
elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SFTP = shutil.which("sftp") or "/usr/bin/sftp"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_sshd() -> None:
    missing = [p for p in (SSHD, SSH_KEYGEN) if not os.access(p, os.X_OK)]
    if missing:
        msg = f"OpenSSH server not installed ({', '.join(missing)} missing): apt-get install openssh-server"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def keygen(path: Path) -> None:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "bridge-test", "-f", str(path)],
                   check=True, capture_output=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


class SshServer:
    """One sshd process with its own config, keys, known_hosts and log."""

    def __init__(self, root: Path, user_key: Path, host_key: Path | None = None, *, max_sessions: int = 100) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user_key = user_key
        self.host_key = host_key or root / "ssh_host_ed25519_key"
        if not self.host_key.exists():
            keygen(self.host_key)
        self.port = free_port()
        self.deny_port = free_port()
        self.log = root / "sshd.log"
        self.config = root / "sshd_config"
        self.known_hosts = root / "known_hosts"
        self.proc: subprocess.Popen[bytes] | None = None
        (root / "authorized_keys").write_text(Path(str(user_key) + ".pub").read_text())
        pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(
            f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n[127.0.0.1]:{self.deny_port} {pub[0]} {pub[1]}\n")
        self.config.write_text(
            f"""Port {self.port}
Port {self.deny_port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {root / 'authorized_keys'}
UsePAM no
StrictModes no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
MaxStartups 100:30:200
MaxSessions {max_sessions}
LogLevel VERBOSE
Subsystem sftp internal-sftp
Match LocalPort {self.deny_port}
    ForceCommand internal-sftp -P remove,rename,posix-rename
"""
        )

    def start(self) -> SshServer:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir, as root
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop this sshd and its per-connection children, by pid."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for child in _children(self.proc.pid):
            for grandchild in _children(child):
                _kill(grandchild, sig)
            _kill(child, sig)
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def kill(self) -> None:
        """Kill the server and every open connection at once (SIGKILL)."""
        self.stop(signal.SIGKILL)

    def sftp_batch(self, commands: str, *, port: int | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run OpenSSH's own ``sftp -b`` client against this server."""
        batch = self.root / f"batch-{uuid.uuid4().hex[:8]}"
        batch.write_text(commands)
        return subprocess.run(
            [SFTP, "-q", "-b", str(batch), "-P", str(port or self.port), "-i", str(self.user_key),
             "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "GlobalKnownHostsFile=/dev/null",
             "root@127.0.0.1"],
            check=True, capture_output=True, timeout=120,
        )


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ssh_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_sshd()
    return tmp_path_factory.mktemp("sshd")


@pytest.fixture(scope="session")
def user_key(ssh_root: Path) -> Path:
    key = ssh_root / "id_user"
    keygen(key)
    return key


@pytest.fixture(scope="session")
def sshd(ssh_root: Path, user_key: Path) -> Iterator[SshServer]:
    server = SshServer(ssh_root / "main", user_key).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote_dir(ssh_root: Path) -> Path:
    """A fresh remote directory (the sshd serves the real filesystem as root)."""
    d = ssh_root / "remote" / uuid.uuid4().hex[:10] / "inbox"
    d.mkdir(parents=True)
    return d
