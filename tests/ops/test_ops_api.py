"""Operator actions through the API (and bridge.ops underneath), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from bridge import ops
from bridge.db import Database
from bridge.db.tables import events, failures, inbound_files, records
from tests.helpers import count
from tests.ops.conftest import CHANNEL, auth, rows


def _open(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(select(failures).where(failures.c.status == "open").order_by(failures.c.id)))


def test_crosswalk_fix_counts_and_reprocesses_exactly_its_failures(db: Database, api: TestClient, keys, ingest) -> None:
    ingest(rows(["100234", "999999", "999999", "888888"]), "a.csv")
    assert [(f.kind, f.key) for f in _open(db)] == [("item", "999999"), ("item", "999999"), ("item", "888888")]
    w = auth(keys["writer"])
    r = api.post("/v1/crosswalks/item", json={"source_code": "999999", "target_code": "ERP-NEW-1",
                                              "reason": "new item"}, headers=w)
    assert r.status_code == 201 and r.json()["fixes"] == 2
    assert api.get("/v1/crosswalks/item/fixes", params={"codes": ["999999"]}, headers=w).json() == {"fixes": 2}
    job = api.post("/v1/crosswalks/item/reprocess", json={"codes": ["999999"], "reason": "fix"}, headers=w).json()
    api.app.state.jobs.wait(job["id"])
    done = api.get(f"/v1/jobs/{job['id']}", headers=auth(keys["reader"])).json()
    assert done["status"] == "done" and done["total"] == 2 and done["summary"]["resolved"] == 2
    assert [(f.key) for f in _open(db)] == ["888888"]
    assert count(db, records) == 3
    n_events = count(db, events)
    # idempotent: re-running a resolved message's file creates nothing twice
    ops.reprocess_failures(api.app.state.ops, [failures.c.status == "open"], actor="test")
    assert count(db, records) == 3 and count(db, events) == n_events
    actions = [a["action"] for a in api.get("/v1/audit", headers=w).json()]
    assert actions[:3] == ["failures.reprocess", "crosswalks.reprocess_fixed", "crosswalks.add"]
    audit = api.get("/v1/audit", params={"action": "crosswalks.add"}, headers=w).json()[0]
    assert audit["actor"] == "api:writer" and audit["reason"] == "new item" and audit["target"] == "item"


def test_reprocess_one_and_by_filter_job(db: Database, api: TestClient, keys, ingest) -> None:
    ingest(rows(["999999"]), "a.csv", origin="sftp://partner-a/out")
    ingest(rows(["999999"], start=5), "b.csv", origin="sftp://partner-b/out")
    w = auth(keys["writer"])
    first, second = _open(db)
    r = api.post(f"/v1/failures/{first.id}/reprocess", headers=w)
    assert r.status_code == 200 and r.json()["failed_again"] == 1 and r.json()["resolved"] == 0
    api.post("/v1/crosswalks/item", json={"source_code": "999999", "target_code": "X"}, headers=w)
    job = api.post("/v1/failures/reprocess", json={"partner": "partner-b", "category": "master_data"},
                   headers=w)
    assert job.status_code == 202
    api.app.state.jobs.wait(job.json()["id"])
    assert [f.id for f in _open(db)] == [first.id]
    r = api.post(f"/v1/failures/{second.id}/reprocess", headers=w)
    assert r.status_code == 409 and "not open" in r.json()["detail"]
    assert api.post("/v1/failures/424242/reprocess", headers=w).status_code == 404
    # cancel a finished job: it stays done; an unknown job is 404
    assert api.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=w).json()["status"] == "done"
    assert api.get("/v1/jobs/nope", headers=w).status_code == 404


def test_cancelled_job_stops_before_the_next_file(db: Database, api: TestClient, keys, ingest) -> None:
    for i in range(3):
        ingest(rows(["999999"], start=i * 10), f"f{i}.csv")
    ctx = api.app.state.ops
    cancel = __import__("threading").Event()
    seen: list[int] = []

    def progress(s: ops.ReprocessSummary, done: int, total: int) -> None:
        seen.append(done)
        if done >= 1:
            cancel.set()

    s = ops.reprocess_failures(ctx, [], actor="test", progress=progress, cancel=cancel, workers=1)
    assert s.cancelled and s.files == 1 and seen == [0, 1]


def test_resolve_and_ignore_need_a_reason_and_are_audited(db: Database, api: TestClient, keys, ingest) -> None:
    ingest(rows(["999999", "888888"]), "a.csv")
    a, b = _open(db)
    w = auth(keys["writer"])
    assert api.post(f"/v1/failures/{a.id}/resolve", json={"reason": ""}, headers=w).status_code == 422
    assert api.post(f"/v1/failures/{a.id}/resolve", json={"reason": "fixed by hand"},
                    headers=auth(keys["reader"])).status_code == 403
    assert api.post(f"/v1/failures/{a.id}/resolve", json={"reason": "fixed by hand"}, headers=w).status_code == 200
    assert api.post(f"/v1/failures/{b.id}/ignore", json={"reason": "test row"}, headers=w).status_code == 200
    assert api.post(f"/v1/failures/{b.id}/ignore", json={"reason": "again"}, headers=w).status_code == 409
    with db.read() as conn:
        got = conn.execute(select(failures.c.status, failures.c.note, failures.c.resolved_by)
                           .order_by(failures.c.id)).all()
    assert [tuple(g) for g in got] == [("resolved", "fixed by hand", "api:writer"), ("ignored", "test row", "api:writer")]
    log = api.get("/v1/audit", headers=w).json()
    assert [(x["action"], x["target"], x["reason"]) for x in log[:2]] == [
        ("failures.ignore", str(b.id), "test row"), ("failures.resolve", str(a.id), "fixed by hand")]


def test_resubmit_lands_a_new_version_and_resolves_the_original(db: Database, api: TestClient, keys, ingest) -> None:
    bad = rows(["100234", "999999"])
    res = ingest(bad, "a.csv")
    with db.read() as conn:
        sha_before = conn.execute(select(inbound_files.c.sha256).where(inbound_files.c.id == res.inbound_id)).scalar()
    fixed = bad.replace(b"999999", b"100234")
    w = auth(keys["writer"])
    r = api.post(f"/v1/inbound/{res.inbound_id}/resubmit", params={"reason": "typo in item"},
                 files={"file": ("a-fixed.csv", io.BytesIO(fixed), "text/csv")}, headers=w)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "processed" and body["original_failures_resolved"] == 1
    with db.read() as conn:
        new = conn.execute(select(inbound_files).where(inbound_files.c.id == body["new_inbound_id"])).one()
        orig = conn.execute(select(inbound_files).where(inbound_files.c.id == res.inbound_id)).one()
        f = conn.execute(select(failures).where(failures.c.inbound_id == res.inbound_id)).one()
    assert new.parent_id == res.inbound_id and orig.sha256 == sha_before
    assert f.status == "resolved" and f.resolved_by == f"resubmit:{new.id}"
    # the same bytes again are refused (a duplicate); so is an unknown file
    again = api.post(f"/v1/inbound/{res.inbound_id}/resubmit",
                     files={"file": ("a.csv", io.BytesIO(fixed), "text/csv")}, headers=w)
    assert again.status_code == 409
    assert api.post("/v1/inbound/424242/resubmit", files={"file": ("x", b"x")}, headers=w).status_code == 404
    assert api.get("/v1/audit", params={"action": "inbound.resubmit"}, headers=w).json()[-1]["target"] == str(
        res.inbound_id)
    t = ops.trace(db, res.inbound_id)
    assert [v.id for v in t["versions"]] == [new.id]
    assert {"landed", "failure (master_data)", "resubmitted as"} <= {x["what"] for x in t["timeline"]}


def test_crosswalk_search_import_deactivate(db: Database, api: TestClient, keys, ingest) -> None:
    ingest(rows(["555", "556"]), "a.csv")
    w = auth(keys["writer"])
    csv_text = "source_code,target_code,description\n555,ERP-555,Gauze\n556,ERP-556,Tape\n"
    r = api.post("/v1/crosswalks/item/import", files={"file": ("items.csv", csv_text.encode(), "text/csv")},
                 headers=w)
    assert r.status_code == 200 and r.json()["count"] == 2 and r.json()["fixes"] == 2
    bad = api.post("/v1/crosswalks/item/import", files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}, headers=w)
    assert bad.status_code == 422 and "source_code" in bad.json()["detail"]
    found = api.get("/v1/crosswalks", params={"kind": "item", "q": "gauze"}, headers=w).json()
    assert [(c["source_code"], c["target_code"], c["active"]) for c in found] == [("555", "ERP-555", True)]
    assert api.delete("/v1/crosswalks/item/555", params={"reason": "retired"}, headers=w).status_code == 204
    assert api.get("/v1/crosswalks", params={"kind": "item", "q": "555"}, headers=w).json()[0]["active"] is False
    assert api.delete("/v1/crosswalks/item/nope", headers=w).status_code == 404
    assert api.get("/v1/crosswalks/item/fixes", params={"codes": ["555"]}, headers=w).json() == {"fixes": 0}
    assert api.post("/v1/crosswalks/item", json={"source_code": "1", "target_code": "2"},
                    headers=auth(keys["reader"])).status_code == 403


def test_excerpt_masks_phi_columns_unless_allowed(db: Database, ctx: ops.OpsContext, ingest) -> None:
    ingest(rows(["100234", "999999", "100234"]), "a.csv")
    [f] = _open(db)
    row = ops.failure_row(db, f.id)
    import orjson

    pos = orjson.loads(row.position)
    masked = ops.excerpt(ctx.archive, row, pos, phi=False)
    target = [text for no, text, hit in masked["lines"] if hit]
    assert target and "999999" in target[0] and "***" in target[0] and "V0000001" not in target[0]
    assert all("V000000" not in text for _, text, _ in masked["lines"])
    plain = ops.excerpt(ctx.archive, row, pos, phi=True)
    assert any("V0000001" in text for _, text, _ in plain["lines"])
    assert CHANNEL == row.channel


def test_hl7_excerpt_masks_pid() -> None:
    from bridge.ops import _mask_segment

    assert _mask_segment("PID|1||MRN123^^^H||DOE^JANE", "|") == "PID|1||***||***"
    masked = _mask_segment("NM1*IL*1*DOE*JANE****MI*123", "*", ":")
    assert masked.split("*") == ["NM1", "IL", "1", "[masked]", "[masked]", "", "", "", "[masked]", "[masked]"]
    assert _mask_segment("NM1*PR*2*ACME PAYER", "*", ":") == "NM1*PR*2*ACME PAYER"  # a payer is not PHI


def test_hl7_and_x12_excerpts_mark_the_segment_and_mask_patients(tmp_path) -> None:
    from bridge.pipeline.land import Archive

    archive = Archive(tmp_path / "a")
    hl7 = (b"MSH|^~\\&|CHG|HOSP|ERP|HOSP|20261126080000||DFT^P03|M1|P|2.5.1\r"
           b"PID|1||MRN0001^^^HOSP||DOE^JANE\rFT1|1|||20261126||CG|100234|||1\r"
           b"MSH|^~\\&|CHG|HOSP|ERP|HOSP|20261126080100||DFT^P03|M2|P|2.5.1\r"
           b"PID|1||MRN0002^^^HOSP||ROE^RICHARD\rPV1|1|I|||||||||||||||||V0000002\r"
           b"FT1|1|||20261126||CG|100234|||1\rFT1|2|||20261126||CG|999999|||1\r")
    sha, _ = archive.store_bytes(hl7)
    pos = {"message": 1, "segment": "FT1", "segment_index": 2, "field": "FT1-7"}
    out = ops.excerpt(archive, sha, pos, phi=False)
    assert out["kind"] == "segments" and [r[1][:3] for r in out["lines"]] == ["MSH", "PID", "PV1", "FT1", "FT1"]
    assert [r[2] for r in out["lines"]] == [False, False, False, False, True]
    text = "\n".join(r[1] for r in out["lines"])
    assert "MRN0002" not in text and "ROE" not in text and "V0000002" not in text and "999999" in text
    assert "MRN0002" in "\n".join(r[1] for r in ops.excerpt(archive, sha, pos, phi=True)["lines"])

    isa = "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261126*0800*^*00501*000000001*0*P*:~"
    x12 = (isa + "GS*HC*S*R*20261126*0800*1*X*005010X222A1~ST*837*0001*005010X222A1~BHT*0019*00*1*20261126*0800*CH~"
           "NM1*IL*1*DOE*JANE****MI*M123~CLM*PCN42*100***11:B:1~SE*5*0001~GE*1*1~IEA*1*000000001~").encode()
    sha, _ = archive.store_bytes(x12)
    out = ops.excerpt(archive, sha, {"message": 0, "segment": "CLM", "segment_index": 4}, phi=False)
    assert [r[1].split("*")[0] for r in out["lines"]] == ["ST", "BHT", "NM1", "CLM", "SE"]
    assert [r[2] for r in out["lines"]] == [False, False, False, True, False]
    text = "\n".join(r[1] for r in out["lines"])
    assert "DOE" not in text and "M123" not in text and "PCN42" not in text
