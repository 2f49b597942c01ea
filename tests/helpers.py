"""Small helpers shared by tests: settings for a temp dir, waiting for a condition, reading tables."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bridge.db import Database
from bridge.db.tables import events, failures, inbound_files, records
from bridge.errors import MasterDataError, Position
from bridge.settings import Settings
from mappings.crosswalks import upsert_entries

CONSUMPTION_HEADER = "timestamp,item,qty,uom,dept,transaction_type,lot,encounter\n"


def consumption_csv(rows: int, *, start: int = 0, item: str = "100234", dept: str = "ICU") -> bytes:
    lines = [CONSUMPTION_HEADER]
    for i in range(start, start + rows):
        lines.append(f"2026-11-26 08:{(i // 60) % 60:02d}:{i % 60:02d},{item},{1 + i % 3},EA,{dept},issue,L{i},V{i:07d}\n")
    return "".join(lines).encode()


def seed_crosswalks(db: Database) -> None:
    with db.write() as conn:
        upsert_entries(conn, "item", [
            {"source_code": "100234", "target_code": "ERP-SUT-0001"},
            {"source_code": "100235", "target_code": "ERP-GLV-0007"},
            {"source_code": "100299", "target_code": "ERP-OLD-0001", "active": False},
        ])
        upsert_entries(conn, "department", [
            {"source_code": "ICU", "target_code": "CC-4100"},
            {"source_code": "ED", "target_code": "CC-4200"},
        ])


def settings_for(tmp: Path, db_url: str, channels: dict[str, Any], **extra: Any) -> Settings:
    data: dict[str, Any] = {"database_url": db_url, "data_dir": str(tmp / "var"), "channels": channels}
    data.update(extra)
    s = Settings.model_validate(data)
    s.validate_components()
    return s


def folder_channel(path: Path, **source: Any) -> dict[str, Any]:
    return {
        "source": {"type": "folder", "path": str(path), "settle_seconds": 0.2, "rescan_seconds": 0.5, **source},
        "parser": {"type": "csv"},
        "mapping": {"type": "inventory_movement_csv"},
    }


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def count(db: Database, table: Any, *where: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def inbound_rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(inbound_files).order_by(inbound_files.c.id)).all())


def record_count(db: Database, rtype: str = "inventory_movement") -> int:
    return count(db, records, records.c.type == rtype)


def event_count(db: Database) -> int:
    return count(db, events)


def open_failures(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(failures).where(failures.c.status == "open").order_by(failures.c.id)).all())


class DictCrosswalks:
    """Crosswalks held in a dict, for mapping unit tests without a database (the storage tests use the
    database); a missing code raises MasterDataError as the real snapshot does."""

    def __init__(self, entries: dict[str, dict[str, str]] | None = None) -> None:
        self.entries = entries or {}

    def find(self, kind: str, code: str) -> str | None:
        return self.entries.get(kind, {}).get(code)

    def lookup(self, kind: str, code: str, *, position: Position, field: str | None = None) -> str:
        hit = self.find(kind, code)
        if hit is None:
            raise MasterDataError(f"no {kind} crosswalk entry for code {code!r}", position.with_(field=field),
                                  kind=kind, key=code)
        return hit


def fuzz_operation(operation: Any, key: str, *, examples: int, cut: int) -> str | None:
    """Run schemathesis' checks (no 5xx, responses match the OpenAPI schema) on one operation with
    ``examples`` derandomised cases; the failures as text (cut to ``cut`` characters), or None.

    Business refusals of schema-valid data (an unknown vendor or item) are 422s by design, so
    the positive-data-acceptance check is excluded.
    """
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings

    @hsettings(max_examples=examples, deadline=None, database=None, derandomize=True,
               suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-Key": key},
                               excluded_checks=[schemathesis.checks.positive_data_acceptance])

    try:
        check()
    except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 - a FailureGroup per operation: report all
        return f"{operation.method.upper()} {operation.path}: {str(e)[:cut]}"
    return None


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (PEM files in ``folder``), for TLS tests on loopback."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "loopback.crt", folder / "loopback.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def mutate(rng: random.Random, data: bytes, marks: Sequence[bytes],
           swaps: Sequence[tuple[bytes, Sequence[bytes]]] = ()) -> bytes:
    """``data`` bent 1 to 4 times, for the fuzz tests: a span cut, random bytes inserted, one of ``marks``
    inserted (delimiters, segment names, odd numbers), a byte flipped, the rest cut off, a span repeated, or
    one of ``swaps`` (every ``old`` replaced by one of its choices, a delimiter mistaken for another)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        i = rng.randrange(len(out))
        j = min(len(out), i + rng.randint(1, 40))
        op = rng.randrange(6 + len(swaps))
        if op == 0:
            del out[i:j]
        elif op == 1:
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:
            out[i:i] = rng.choice(marks)
        elif op == 3:
            out[i] = rng.randrange(256)
        elif op == 4:
            del out[i:]
        elif op == 5:
            out[i:i] = out[i:j] * rng.randint(2, 5)
        else:
            old, choices = swaps[op - 6]
            out = bytearray(bytes(out).replace(old, rng.choice(choices)))
    return bytes(out)
