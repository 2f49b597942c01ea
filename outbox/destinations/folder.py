"""``folder``: write each event as a file into one directory, atomically.

Events that carry a file (ACKs such as an HL7 ACK or an X12 999, outbound X12
or HL7 files: ``data.content`` with ``data.filename``, see
``mappings.base.EventDraft``) are written as that file; every other event is
written as its JSON envelope, named ``<event id>.json``.

The write is atomic (a hidden temp name in the same directory, ``fsync``, then
``os.replace``, then an ``fsync`` of the directory), so a reader polling the
folder never sees half a file, and a redelivery replaces the file with the
same bytes. File names come from event payloads, i.e. from outside: a name
with a path separator, ``..``, a NUL or a leading dot is refused (dead-lettered),
so nothing is ever written outside the configured directory (Camel's
"jail" rule for its file component). A file event with ``data.secret_env`` has
its credential filled in from that environment variable only now, at delivery
(:func:`fill_secret`).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from pydantic import Field

from bridge.errors import PermanentDelivery, RetryableDelivery
from bridge.files import fsync_dir
from outbox.destinations.base import Destination, DestinationConfig, OutboxEvent, Receipt

__all__ = ["SECRET_SLOT", "FolderDestination", "FolderDestinationConfig", "fill_secret", "render_file", "safe_name"]

#: stands for a credential in a stored file event whose ``data.secret_env`` names its variable
SECRET_SLOT = "{{bridge:secret}}"


class FolderDestinationConfig(DestinationConfig):
    directory: Path
    #: create the directory at start-up when missing
    create: bool = True
    #: encoding of ``data.content`` (X12 and HL7 are ASCII/Latin-1 in practice)
    encoding: str = "utf-8"
    #: also fsync the directory after the rename (durable against power loss)
    fsync_directory: bool = True
    #: suffix added to the generated name of non-file events
    json_suffix: str = Field(".json", pattern=r"^\.[A-Za-z0-9]{1,10}$")


def safe_name(name: object, *, event_id: str) -> str:
    """Return ``name`` if it is a plain file name, else raise PermanentDelivery (no value quoted)."""
    if not isinstance(name, str) or not name:
        raise PermanentDelivery(f"event {event_id}: data.filename is missing or not a string")
    if ("/" in name or "\\" in name or "\x00" in name or name.startswith(".") or name in (".", "..")
            or len(name) > 255 or os.path.isabs(name)):
        raise PermanentDelivery(f"event {event_id}: data.filename is not a plain file name (path traversal refused)")
    return name


class FolderDestination(Destination):
    """Write event files atomically into ``directory``, never outside it."""

    Config = FolderDestinationConfig

    def __init__(self, name: str, config: FolderDestinationConfig) -> None:
        super().__init__(name, config)
        self.config: FolderDestinationConfig = config
        self.root = Path(config.directory).resolve()

    def open(self) -> None:
        if self.config.create:
            self.root.mkdir(parents=True, exist_ok=True)

    def render(self, event: OutboxEvent) -> tuple[str, bytes]:
        """(file name, bytes) for an event; PermanentDelivery when it cannot be rendered."""
        return render_file(event, encoding=self.config.encoding, json_suffix=self.config.json_suffix)

    def deliver(self, event: OutboxEvent) -> Receipt:
        name, body = self.render(event)
        target = self.root / name
        if target.parent != self.root:  # belt and braces after safe_name
            raise PermanentDelivery(f"event {event.id}: file name leaves the destination folder")
        tmp = self.root / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            self.open()
            with open(tmp, "xb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            if self.config.fsync_directory:
                fsync_dir(self.root)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise RetryableDelivery(f"{self.name}: cannot write into the destination folder ({exc.strerror})") from exc
        return Receipt(response=name)


def fill_secret(content: str, env: str, *, event_id: str) -> str:
    """``content`` with :data:`SECRET_SLOT` replaced by the XML-escaped value of ``$env``.

    A document that must carry a credential (a cXML ``SharedSecret``) is stored
    in the outbox with this slot instead, so the event feed, the database and its
    backups never hold the secret; it exists only in the delivered file. An unset
    variable is retried (an operator sets it; the backlog then drains), naming the
    variable, never a value.
    """
    secret = os.environ.get(env)
    if not secret:
        raise RetryableDelivery(f"event {event_id}: environment variable {env} (the document's secret) is not set")
    return content.replace(SECRET_SLOT, xml_escape(secret))


def render_file(event: OutboxEvent, *, encoding: str, json_suffix: str) -> tuple[str, bytes]:
    """(file name, bytes) of an event for a file destination (folder, sftp).

    An event whose ``data`` carries ``filename`` and ``content`` (an ACK, an outbound
    X12/HL7 file) is that file; any other event is its JSON payload named by its id.
    Raises PermanentDelivery when it cannot be rendered.
    """
    doc = event.document()
    data = doc.get("data")
    if isinstance(data, dict) and "filename" in data and "content" in data:
        name = safe_name(data["filename"], event_id=event.id)
        content = data["content"]
        if not isinstance(content, str):
            raise PermanentDelivery(f"event {event.id}: data.content is not text")
        if data.get("secret_env"):
            content = fill_secret(content, str(data["secret_env"]), event_id=event.id)
        try:
            return name, content.encode(encoding)
        except UnicodeEncodeError:
            raise PermanentDelivery(f"event {event.id}: data.content cannot be encoded as {encoding}") from None
    return event.id + json_suffix, event.payload.encode()
