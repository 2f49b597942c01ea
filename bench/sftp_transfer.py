"""Benchmark: bridge's SFTP source vs OpenSSH's ``sftp -b`` on the same loopback sshd, same run.

Starts a throwaway OpenSSH sshd (the test fixture's ``SshServer``), writes
500 files of 100 KB and one 500 MB file (random bytes) into a temp remote dir,
then

- bridge: ``SftpSource.poll_once`` downloads and *lands* them (archive fsync +
  one ``inbound_files`` row each, SQLite), ``after: keep``;
- OpenSSH: ``sftp -b`` with ``get`` of the same files into a local dir.

Prints MB/s for both, the ratio (issue 4 target: bridge >= 60% of OpenSSH on
the large file, >= 50 files/s on the small ones) and files/s. Everything is
deleted afterwards. Usage: ``.venv/bin/python bench/sftp_transfer.py [--big-mb 500] [--small 500]``.
Figures on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.db import Database  # noqa: E402
from bridge.pipeline.land import Archive, Lander  # noqa: E402
from bridge.sources.sftp import SftpSource  # noqa: E402
from tests.sftp.conftest import SFTP, SshServer, keygen  # noqa: E402

MB = 1024 * 1024


def openssh_get(server: SshServer, remote: Path, names: list[str], local: Path) -> float:
    local.mkdir()
    batch = "".join(f'get "{remote / n}" "{local / n}"\n' for n in names)
    batch_file = server.root / "bench-batch"
    batch_file.write_text(batch)
    started = time.perf_counter()
    subprocess.run([SFTP, "-q", "-b", str(batch_file), "-P", str(server.port), "-i", str(server.user_key),
                    "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1"],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def bridge_get(server: SshServer, remote: Path, work: Path, channel: str) -> tuple[float, int]:
    db = Database(f"sqlite:///{work / (channel + '.db')}")
    db.upgrade()
    cfg = SftpSource.Config(host="127.0.0.1", port=server.port, username="root", key_file=str(server.user_key),
                            known_hosts=str(server.known_hosts), path=str(remote), after="keep",
                            read_lock="rename", keepalive=0, max_files_per_poll=100_000)
    source = SftpSource(channel, cfg, Lander(db, Archive(work / f"archive-{channel}")))
    source.conn.sftp()  # connect outside the timing, as sftp's own handshake is inside its timing
    started = time.perf_counter()
    n = source.poll_once()
    elapsed = time.perf_counter() - started
    source.conn.close()
    db.dispose()
    return elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=500)
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--small-kb", type=int, default=100)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sftp-", dir="/work" if os.access("/work", os.W_OK) else None))
    server: SshServer | None = None
    try:
        keygen(work / "id_user")
        server = SshServer(work / "sshd", work / "id_user").start()
        small, big = work / "remote-small", work / "remote-big"
        small.mkdir()
        big.mkdir()
        names = [f"f{i:04d}.dat" for i in range(args.small)]
        for n in names:
            (small / n).write_bytes(os.urandom(args.small_kb * 1024))
        with open(big / "big.dat", "wb") as fh:
            for _ in range(args.big_mb):
                fh.write(os.urandom(MB))
        small_mb = args.small * args.small_kb / 1024

        b_small, n_small = bridge_get(server, small, work, "small")
        assert n_small == args.small, n_small
        o_small = openssh_get(server, small, names, work / "ossh-small")
        b_big, n_big = bridge_get(server, big, work, "big")
        assert n_big == 1
        o_big = openssh_get(server, big, ["big.dat"], work / "ossh-big")

        print(f"small files: {args.small} x {args.small_kb} KB ({small_mb:.1f} MB)")
        print(f"  bridge (download + land): {b_small:7.2f} s  {small_mb / b_small:7.1f} MB/s  "
              f"{args.small / b_small:7.1f} files/s")
        print(f"  OpenSSH sftp -b (get)   : {o_small:7.2f} s  {small_mb / o_small:7.1f} MB/s  "
              f"{args.small / o_small:7.1f} files/s")
        print(f"  ratio bridge/OpenSSH    : {o_small / b_small:7.2f}")
        print(f"large file: {args.big_mb} MB")
        print(f"  bridge (download + land): {b_big:7.2f} s  {args.big_mb / b_big:7.1f} MB/s")
        print(f"  OpenSSH sftp -b (get)   : {o_big:7.2f} s  {args.big_mb / o_big:7.1f} MB/s")
        print(f"  ratio bridge/OpenSSH    : {o_big / b_big:7.2f}  (target >= 0.60)")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
