"""Settings: ``bridge.yaml`` plus ``BRIDGE_*`` environment overrides, validated by pydantic.

An environment variable ``BRIDGE_A__B=value`` overrides key ``a.b`` of the
YAML (``__`` separates levels; the value is read as a YAML scalar, so
``BRIDGE_API__PORT=9000`` is an int). ``BRIDGE_CONFIG`` names the file itself.

Each channel's ``source``, ``parser`` and ``mapping`` block, and each
destination, carries a ``type`` looked up in :mod:`bridge.registry`; the rest of
the block is validated against that component's ``Config`` (``extra="forbid"``),
so a typo stops start-up with the dotted key and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge import registry
from bridge.errors import ConfigError
from parsers.x12.partners import PartnerConfig

__all__ = [
    "ApiConfig",
    "ChannelConfig",
    "CrosswalkSeed",
    "DestinationConfig",
    "ProcessingConfig",
    "RelayConfig",
    "Settings",
    "build_component",
    "load_settings",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(BaseModel):
    """A ``{type: ..., ...}`` block; the keys beyond ``type`` belong to the component."""

    model_config = ConfigDict(extra="allow")
    type: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: binding beyond loopback must be asked for: the API serves PHI-bearing records
    allow_remote: bool = False
    max_upload_bytes: int = 512 * 1024 * 1024
    default_page_size: int = Field(100, ge=1, le=1000)
    #: requests per minute for a client whose api_clients row sets none; null: unlimited (bridge.api.ratelimit)
    rate_limit_per_minute: int | None = Field(600, ge=1)
    #: API worker processes; above 1, ``bridge run`` serves the API from that many processes sharing its
    #: socket and rate limits (bridge.api.server says what stays per process)
    workers: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _refuse_open_bind(self) -> ApiConfig:
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback and not self.allow_remote:
            raise ValueError(f"host {self.host!r} is not loopback; set api.allow_remote: true to serve beyond this machine")
        return self


class SlaConfig(_Strict):
    """A channel's latency objectives (p95), shown against the measured lag on the console dashboard."""

    #: drop (received_at) -> committed (processed_at), seconds
    commit_seconds: float | None = Field(None, gt=0)
    #: event committed -> delivered to a destination, seconds
    delivered_seconds: float | None = Field(None, gt=0)


class ChannelConfig(_Strict):
    source: Component
    parser: Component
    mapping: Component
    enabled: bool = True
    #: all-or-nothing: one bad message fails the whole file and nothing commits
    all_or_nothing: bool = False
    description: str = ""
    sla: SlaConfig | None = None


class DestinationConfig(_Strict):
    type: str
    #: event types, with ``*`` wildcards (``inventory.*``, ``*.recorded``)
    subscribe: list[str] = Field(default_factory=lambda: ["*"])
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {"type", "subscribe", "enabled", "options"}
            extra = {k: v for k, v in data.items() if k not in known}
            if extra:
                data = {k: v for k, v in data.items() if k in known}
                data["options"] = {**data.get("options", {}), **extra}
        return data


class CrosswalkSeed(_Strict):
    """A CSV with columns ``source_code,target_code[,description][,active]``."""

    kind: str
    file: Path


class ProcessingConfig(_Strict):
    workers: int = Field(2, ge=1, le=32)
    #: messages committed per transaction; each message stays atomic within it
    batch_size: int = Field(1000, ge=1, le=100_000)
    #: how long a claim on an inbound file lasts before another process may take it
    lease_seconds: float = Field(60.0, gt=0)
    poll_seconds: float = Field(1.0, gt=0)


class RelayConfig(_Strict):
    """The outbox relay (``outbox.relay``): workers, claims, retry schedule, retention."""

    workers: int = Field(2, ge=1, le=64)
    #: ordering keys claimed per transaction; each key's head plus up to run_length - 1 followers
    batch_size: int = Field(100, ge=1, le=10_000)
    run_length: int = Field(20, ge=1, le=1000)
    #: how long a claim lasts before another relay process may take it
    lease_seconds: float = Field(60.0, gt=0)
    #: the fallback: a commit of events in this process, or a PostgreSQL NOTIFY, wakes the relay at once
    poll_seconds: float = Field(0.5, gt=0)
    #: dead-letter after this many attempts, or when the event is older than max_age_seconds
    max_attempts: int = Field(12, ge=1)
    max_age_seconds: float = Field(3 * 24 * 3600.0, gt=0)
    #: exponential backoff with full jitter: random(0, min(cap, base * 2**attempt)) seconds
    backoff_base_seconds: float = Field(1.0, gt=0)
    backoff_cap_seconds: float = Field(600.0, gt=0)
    #: delivered deliveries (and their attempts) older than this are pruned
    retention_days: float = Field(7.0, ge=0)
    prune_interval_seconds: float = Field(3600.0, gt=0)


class Settings(_Strict):
    database_url: str = "sqlite:///var/bridge.db"
    data_dir: Path = Path("var")
    log_level: str = "INFO"
    log_format: str = Field("json", pattern="^(json|text)$")
    api: ApiConfig = Field(default_factory=ApiConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    crosswalks: list[CrosswalkSeed] = Field(default_factory=list)
    #: X12 trading-partner profiles by name (envelope ids, version, acks, return channel)
    partners: dict[str, PartnerConfig] = Field(default_factory=dict)

    @field_validator("channels", "destinations")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"name {name!r} must be 1-64 letters, digits, '_', '.', '-'")
        return value

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    def validate_components(self) -> None:
        """Validate every component block against its registered class's Config."""
        for name, channel in self.channels.items():
            for role in ("source", "parser", "mapping"):
                block: Component = getattr(channel, role)
                build_component(role, block.type, block.options(), key=f"channels.{name}.{role}")
        for name, dest in self.destinations.items():
            build_component("destination", dest.type, dest.options, key=f"destinations.{name}")


def build_component(role: str, type_name: str, options: Mapping[str, Any], *, key: str) -> tuple[type, BaseModel]:
    """Return (class, validated Config) for a component block, or raise ConfigError naming the key."""
    cls = registry.load(role, type_name, key=f"{key}.type")
    config_cls = getattr(cls, "Config", None)
    if config_cls is None:
        raise ConfigError(f"{key}.type", f"{role} {type_name!r} has no Config")
    try:
        config = config_cls.model_validate(dict(options))
    except ValidationError as exc:
        raise _config_error(exc, prefix=key) from None
    return cls, config


def _config_error(exc: ValidationError, *, prefix: str = "") -> ConfigError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    key = ".".join(p for p in (prefix, loc) if p)
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    return ConfigError(key or "(root)", msg)


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith("BRIDGE_") or name == "BRIDGE_CONFIG":
            continue
        path = [p.lower() for p in name[len("BRIDGE_"):].split("__") if p]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        # keep URLs and the like as the exact string given
        node[path[-1]] = value if isinstance(value, (int, float, bool, list, dict)) else raw


def load_settings(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None,
                  validate_components: bool = True) -> Settings:
    """Read the YAML file (if any), apply ``BRIDGE_*`` overrides, validate everything."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("BRIDGE_CONFIG")
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("config", f"cannot read {p}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("config", f"{p} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("config", f"{p} must hold a mapping at the top level")
        data = loaded or {}
    _apply_env(data, environ)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    if validate_components:
        settings.validate_components()
    return settings
