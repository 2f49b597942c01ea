"""A big 837 streams through the parser in bounded memory.

The 500 MB case runs in ``bench/ingest_x12.py --big-mb 500`` (minutes). Here a
child process generates an 837P in a temp dir and parses it; the growth of its
peak RSS during the parse must be the same for 10,000 claims (3.6 MB) and for
70,000 (25 MB): memory is one chunk plus one transaction set, not the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from parsers.x12 import X12Parser
from tests.x12 import synth

def _hwm_kb():
    # VmHWM: ru_maxrss survives exec on Linux, so a child of a big pytest reports its parent's peak
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


path = sys.argv[1]
with open(path, "wb") as f:
    size = synth.write_837(f, int(sys.argv[3]), per_set=1000)
before = _hwm_kb()
sets = claims_seen = 0
with open(path, "rb") as f:
    for m in X12Parser().parse(f, name="big.x12"):
        if m.type == "837":
            assert m.error is None, m.error
            sets += 1
            claims_seen += sum(1 for s in m.data.raw if s.startswith("CLM*"))
after = _hwm_kb()
print(json.dumps({"size": size, "sets": sets, "claims": claims_seen, "growth_kb": after - before}))
"""


def grow(tmp_path: Path, claims: int) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / f"big{claims}.x12"), str(ROOT), str(claims)],
                         capture_output=True, text=True, timeout=300, check=True)
    res: dict[str, int] = json.loads(out.stdout)
    assert res["sets"] == claims // 1000 and res["claims"] == claims
    return res


def test_a_big_837_parses_in_bounded_memory(tmp_path: Path) -> None:
    small = grow(tmp_path, 10_000)
    big = grow(tmp_path, 70_000)
    assert big["size"] > 24_000_000
    # one 1,000-claim set plus a 1 MB chunk: the peak does not grow with the file (7x here)
    assert big["growth_kb"] < small["growth_kb"] + 8 * 1024, (small, big)
    assert big["growth_kb"] < 32 * 1024, big
