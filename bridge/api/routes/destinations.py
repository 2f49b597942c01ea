"""``/v1/destinations`` and ``/v1/replay``: the outbox relay's operator view and actions.

Reading needs ``ops:read``; pausing, resuming and replaying need ``ops:write``
and are written to the audit log as ``api:<client name>``. The work itself is
:mod:`outbox.relay`'s (:func:`~outbox.relay.destination_status`,
:func:`~outbox.relay.pause`, :func:`~outbox.relay.resume`,
:func:`~outbox.relay.replay`); this module only shapes HTTP around it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Security
from pydantic import BaseModel, ConfigDict, Field

from bridge.api.deps import DbDep, OpsReader, SettingsDep, current_client
from bridge.api.keys import Client
from bridge.api.problems import Problem, responses
from bridge.settings import Settings
from outbox import relay

__all__ = ["DestinationPublic", "PauseCreate", "ReplayCreate", "ReplayPublic", "router"]

router = APIRouter(tags=["operations"])

OpsWriter = Annotated[Client, Security(current_client, scopes=["ops:write"])]
NamePath = Annotated[str, Path(max_length=64, description="the destination's name in bridge.yaml")]


class DestinationPublic(BaseModel):
    name: str
    type: str | None = Field(None, description="http, amqp, folder, sftp; null when no longer configured")
    subscribe: list[str] = Field(default_factory=list, examples=[["purchase_order.*"]])
    enabled: bool = False
    paused: bool
    paused_reason: str | None = None
    backlog: int = Field(description="deliveries pending (due, waiting for a retry, or in flight)")
    oldest_pending_seconds: float | None = Field(None, description="age of the oldest pending delivery")
    retrying: int = Field(description="pending deliveries that have failed at least once")
    attempts: int = Field(description="attempts made on the deliveries still kept")
    dead: int = Field(description="dead letters: replay them with POST /v1/replay")
    delivered: int
    fanout_lag: int | None = Field(None, description="events not yet fanned out to this destination")


class PauseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=1000, examples=["ERP maintenance window"])


class ReplayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    destination: str = Field(max_length=64)
    type: str | None = Field(None, max_length=96, description="event type; '*' wildcards allowed")
    key: str | None = Field(None, max_length=320, description="ordering key or aggregate id")
    since: datetime | None = Field(None, description="events created at or after (with an offset)")
    until: datetime | None = Field(None, description="events created before")
    status: Literal["dead", "delivered"] = "dead"
    reason: str | None = Field(None, max_length=1000)


class ReplayPublic(BaseModel):
    destination: str
    replayed: int = Field(description="deliveries set back to pending")


def _public(settings: Settings, row: dict) -> DestinationPublic:  # type: ignore[type-arg]
    cfg = settings.destinations.get(row["name"])
    return DestinationPublic(**row, type=cfg.type if cfg else None, subscribe=cfg.subscribe if cfg else [],
                             enabled=bool(cfg and cfg.enabled))


def _known(settings: Settings, name: str) -> None:
    if name not in settings.destinations:
        raise Problem(404, f"no destination named {name!r} is configured", slug="not-found")


def _aware(value: datetime | None, field: str) -> None:
    if value is not None and value.tzinfo is None:
        raise Problem(422, f"{field!r} needs a UTC offset (e.g. 2026-01-01T00:00:00Z)",
                      slug="invalid-parameter", title="Invalid parameter")


@router.get("/destinations", response_model=list[DestinationPublic], summary="List destinations",
            description="Backlog, oldest pending age, attempts and dead letters per destination. Needs `ops:read`.",
            responses=responses(401, 403))
def list_destinations(client: OpsReader, db: DbDep, settings: SettingsDep) -> list[DestinationPublic]:
    return [_public(settings, r) for r in relay.destination_status(db, settings.destinations)]


def _one(db: DbDep, settings: Settings, name: str) -> DestinationPublic:
    [row] = [r for r in relay.destination_status(db, [name]) if r["name"] == name]
    return _public(settings, row)


@router.post("/destinations/{name}/pause", response_model=DestinationPublic, summary="Pause a destination",
             description="Stop delivering to it; events keep queueing as backlog. Needs `ops:write`.",
             responses=responses(401, 403, 404, 422))
def pause_destination(client: OpsWriter, db: DbDep, settings: SettingsDep, name: NamePath,
                      body: PauseCreate | None = None) -> DestinationPublic:
    _known(settings, name)
    relay.pause(db, name, body.reason if body else None, actor=f"api:{client.name}")
    return _one(db, settings, name)


@router.post("/destinations/{name}/resume", response_model=DestinationPublic, summary="Resume a destination",
             description="Deliver to it again, oldest first. Needs `ops:write`.",
             responses=responses(401, 403, 404))
def resume_destination(client: OpsWriter, db: DbDep, settings: SettingsDep, name: NamePath) -> DestinationPublic:
    _known(settings, name)
    relay.resume(db, name, actor=f"api:{client.name}")
    return _one(db, settings, name)


@router.post("/replay", response_model=ReplayPublic, summary="Replay deliveries",
             description="Set dead-lettered (or delivered) deliveries of one destination matching the filter "
                         "back to pending, with a fresh retry budget. Needs `ops:write`.",
             responses=responses(401, 403, 404, 422))
def replay_deliveries(client: OpsWriter, db: DbDep, settings: SettingsDep, body: ReplayCreate) -> ReplayPublic:
    _known(settings, body.destination)
    _aware(body.since, "since")
    _aware(body.until, "until")
    n = relay.replay(db, body.destination, event_type=body.type, key=body.key, since=body.since, until=body.until,
                     status=body.status, actor=f"api:{client.name}", reason=body.reason)
    return ReplayPublic(destination=body.destination, replayed=n)
