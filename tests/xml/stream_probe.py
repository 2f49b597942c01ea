"""Run as a subprocess by the memory test: write an XML feed of N MB, stream it, print peak RSS.

Prints ``records before_kb peak_kb`` where ``before_kb`` is the peak RSS after
the file was written and ``peak_kb`` the peak after parsing it (ru_maxrss).
``bench/ingest_xml.py --size-mb 300`` measures the same on 300 MB of cXML.
"""

from __future__ import annotations

import sys
from pathlib import Path

from parsers.xml import XmlParser, XmlParserConfig

RECORD = (b'  <c:Product supplier="987654321"><c:Sku>%08d</c:Sku><c:Name>Synthetic product name padding '
          b'padding padding padding padding</c:Name><c:Uom>BX</c:Uom><c:Price>12.50</c:Price></c:Product>\n')


def write_feed(path: Path, megabytes: int) -> int:
    target = megabytes * 1024 * 1024
    n = 0
    size = 0
    with open(path, "wb") as out:
        out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<c:Catalog xmlns:c="urn:example:catalog">\n')
        while size < target:
            chunk = b"".join(RECORD % (n + i) for i in range(1000))
            out.write(chunk)
            size += len(chunk)
            n += 1000
        out.write(b"</c:Catalog>\n")
    return n


def _hwm_kb() -> int:
    # VmHWM: ru_maxrss survives exec on Linux, so a child of a big pytest reports its parent's peak
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def main() -> None:
    path = Path(sys.argv[1])
    megabytes = int(sys.argv[2])
    written = write_feed(path, megabytes)
    before = _hwm_kb()
    parser = XmlParser(XmlParserConfig(record_element="c:Product", namespaces={"c": "urn:example:catalog"}))
    count = 0
    with open(path, "rb") as stream:
        for message in parser.parse(stream, name=path.name):
            assert message.error is None
            count += 1
    peak = _hwm_kb()
    assert count == written, (count, written)
    print(count, before, peak)


if __name__ == "__main__":
    main()
