"""Benchmark: bridge's SFTP source vs OpenSSH's ``sftp -b`` on the same loopback sshd, same run.

Starts a throwaway OpenSSH sshd (the test fixture's ``SshServer``), writes
500 files of 100 KB and one 500 MB file (random bytes) into a temp remote dir,
then

- bridge: ``SftpSource.poll_once`` downloads and *lands* them (archive fsync +
  one ``inbound_files`` row each, SQLite), then acknowledges them
  (``--after delete`` by default, as a real drop is emptied; ``keep`` or ``move:done`` too);
- OpenSSH: ``sftp -b`` with ``get`` of the same files into a local dir (no fsync,
  nothing landed: the ceiling, not a like-for-like).

Prints MB/s for both, the ratio (issue 4 target: bridge >= 60% of OpenSSH on
the large file, >= 50 files/s on the small ones), files/s, and the CPU seconds
each client spent (this process for bridge, the ``sftp`` and ``ssh`` children for
OpenSSH; the server's CPU is in neither) per MB and per file, with the load
average at the start. The files are written twice, so that OpenSSH fetches a
copy bridge did not delete. Everything is deleted afterwards.
Usage: ``.venv/bin/python bench/sftp_transfer.py [--big-mb 500] [--small 500] [--after keep]``.
Figures on a shared 2-core machine are noisy: compare CPU seconds, and the
wall-clock figures of runs made side by side.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def openssh_get(server: SshServer, remote: Path, names: list[str], local: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``sftp -b`` getting ``names`` from ``remote``."""
    local.mkdir()
    batch = "".join(f'get "{remote / n}" "{local / n}"\n' for n in names)
    batch_file = server.root / "bench-batch"
    batch_file.write_text(batch)
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    subprocess.run([SFTP, "-q", "-b", str(batch_file), "-P", str(server.port), "-i", str(server.user_key),
                    "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "root@127.0.0.1"],
                   check=True, capture_output=True)
    return time.perf_counter() - started, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu


def bridge_get(server: SshServer, remote: Path, work: Path, channel: str, after: str) -> tuple[float, float, int]:
    """Wall and CPU seconds of one poll that lands (and acknowledges) everything in ``remote``."""
    db = Database(f"sqlite:///{work / (channel + '.db')}")
    db.upgrade()
    cfg = SftpSource.Config(host="127.0.0.1", port=server.port, username="root", key_file=str(server.user_key),
                            known_hosts=str(server.known_hosts), path=str(remote), after=after,
                            read_lock="rename", keepalive=0, max_files_per_poll=100_000)
    source = SftpSource(channel, cfg, Lander(db, Archive(work / f"archive-{channel}")))
    source.conn.sftp()  # connect outside the timing, as sftp's own handshake is inside its timing
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
    n = source.poll_once()
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(resource.RUSAGE_SELF) - cpu
    source.conn.close()
    db.dispose()
    return elapsed, cpu, n


def write_copies(dirs: list[Path], name: str, size: int) -> None:
    """The same random bytes under ``name`` in each of ``dirs``, in 1 MiB blocks."""
    outs = [open(d / name, "wb") for d in dirs]
    try:
        left = size
        while left:
            block = os.urandom(min(MB, left))
            for out in outs:
                out.write(block)
            left -= len(block)
    finally:
        for out in outs:
            out.close()


def report(what: str, mb: float, files: int, bridge: tuple[float, float], openssh: tuple[float, float]) -> None:
    print(f"{what}: {files} x {mb / files:.2f} MB ({mb:.1f} MB)")
    for who, (wall, cpu) in (("bridge (download + land)", bridge), ("OpenSSH sftp -b (get)   ", openssh)):
        print(f"  {who}: {wall:7.2f} s  {mb / wall:7.1f} MB/s  {files / wall:7.1f} files/s  "
              f"CPU {cpu:6.2f} s = {cpu / mb * 1000:6.2f} ms/MB, {cpu / files * 1000:7.2f} ms/file")
    print(f"  ratio bridge/OpenSSH    : {openssh[0] / bridge[0]:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-mb", type=int, default=500)
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--small-kb", type=int, default=100)
    ap.add_argument("--after", default="delete", help="delete, keep or move:<dir>")
    args = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    work = Path(tempfile.mkdtemp(prefix="bench-sftp-", dir="/work" if os.access("/work", os.W_OK) else None))
    server: SshServer | None = None
    try:
        keygen(work / "id_user")
        server = SshServer(work / "sshd", work / "id_user").start()
        dirs = {who: (work / f"{who}-small", work / f"{who}-big") for who in ("bridge", "openssh")}
        for pair in dirs.values():
            for d in pair:
                d.mkdir()
        names = [f"f{i:04d}.dat" for i in range(args.small)]
        for n in names:
            write_copies([dirs["bridge"][0], dirs["openssh"][0]], n, args.small_kb * 1024)
        write_copies([dirs["bridge"][1], dirs["openssh"][1]], "big.dat", args.big_mb * MB)
        small_mb = args.small * args.small_kb / 1024

        *b_small, n_small = bridge_get(server, dirs["bridge"][0], work, "small", args.after)
        assert n_small == args.small, n_small
        o_small = openssh_get(server, dirs["openssh"][0], names, work / "ossh-small")
        *b_big, n_big = bridge_get(server, dirs["bridge"][1], work, "big", args.after)
        assert n_big == 1
        o_big = openssh_get(server, dirs["openssh"][1], ["big.dat"], work / "ossh-big")

        report("small files", small_mb, args.small, (b_small[0], b_small[1]), o_small)
        print(f"  bridge files/s          : {args.small / b_small[0]:7.1f}  (target >= 50)")
        report("large file", args.big_mb, 1, (b_big[0], b_big[1]), o_big)
        print("  (target: ratio >= 0.60)")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
