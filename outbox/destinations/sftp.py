"""``sftp``: upload each event as a file into a remote directory, atomically.

What a file is follows ``outbox.destinations.folder``: an event carrying
``data.content`` with ``data.filename`` (an X12 850, a 999/997/TA1, an HL7
ACK file, an export) becomes that file; any other event becomes its JSON
envelope named ``<event id>.json``. File names from payloads pass the same
jail (``folder.safe_name``): no separator, no ``..``, no leading dot.

Atomicity: the bytes are written under a hidden temp name in the target
directory (pipelined writes, size checked with ``stat``), then moved onto the
real name with OpenSSH's ``posix-rename@openssh.com`` extension, which
replaces an existing file atomically (plain SFTP v3 ``SSH_FXP_RENAME`` fails
onto an existing name, FIELD-NOTES). A receiver polling the directory sees
either no file or the whole file, and a redelivery of the same event
replaces it with the same bytes.

Connection, host-key pinning and credentials are ``bridge.sftp_client``'s;
the relay gives each worker thread its own instance, so each holds its own
connection. Transport failures are :class:`RetryableDelivery`; a wrong host
key or wrong credentials too (they are not the event's fault), with
``retry_after`` set to ``auth_failure_backoff`` so the relay does not hammer
the server.
"""

from __future__ import annotations

import errno
import posixpath
import uuid

import paramiko
from pydantic import Field

from bridge.errors import ConfigError, RetryableDelivery, SourceError
from bridge.sftp_client import SftpConnection, SftpConnectionConfig, describe
from outbox.destinations.base import Destination, DestinationConfig, OutboxEvent, Receipt
from outbox.destinations.folder import render_file

__all__ = ["SftpDestination", "SftpDestinationConfig", "upload_atomically"]


class SftpDestinationConfig(DestinationConfig, SftpConnectionConfig):
    """``destinations.<name>: {type: sftp, host, port, username, key_file | password_env, known_hosts, directory}``."""

    #: remote directory the files are delivered into
    directory: str
    #: create the remote directory when missing
    create: bool = False
    #: encoding of ``data.content``
    encoding: str = "utf-8"
    json_suffix: str = Field(".json", pattern=r"^\.[A-Za-z0-9]{1,10}$")


def upload_atomically(sftp: paramiko.SFTPClient, directory: str, name: str, body: bytes, *,
                      request_size: int = 32768) -> str:
    """Write ``body`` as ``directory/name`` via a hidden temp name and ``posix_rename``; return the path.

    ``name`` must already be a plain file name (one path segment).
    """
    target = posixpath.join(directory, name)
    tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with sftp.open(tmp, "wb") as fh:
            fh.MAX_REQUEST_SIZE = request_size
            fh.set_pipelined(True)
            fh.write(body)
        size = sftp.stat(tmp).st_size
        if size != len(body):
            raise OSError(errno.EIO, f"uploaded {size} bytes of {len(body)}")
        sftp.posix_rename(tmp, target)
    except BaseException:
        try:
            sftp.remove(tmp)
        except Exception:  # noqa: BLE001 - best effort; the temp name is hidden anyway
            pass
        raise
    return target


class SftpDestination(Destination):
    """Deliver event files into a remote SFTP directory; the receiver never sees a partial file."""

    Config = SftpDestinationConfig

    def __init__(self, name: str, config: SftpDestinationConfig) -> None:
        super().__init__(name, config)
        self.config: SftpDestinationConfig = config
        self.conn = SftpConnection(config)

    def render(self, event: OutboxEvent) -> tuple[str, bytes]:
        """(file name, bytes) for an event; PermanentDelivery when it cannot be rendered."""
        return render_file(event, encoding=self.config.encoding, json_suffix=self.config.json_suffix)

    def _session(self) -> paramiko.SFTPClient:
        try:
            return self.conn.sftp()
        except SourceError as e:
            wait = None if e.retryable else self.config.auth_failure_backoff
            raise RetryableDelivery(f"{self.name}: {e.reason}", retry_after=wait) from e
        except ConfigError as e:
            raise RetryableDelivery(f"{self.name}: {e}", retry_after=self.config.auth_failure_backoff) from e

    def open(self) -> None:
        sftp = self._session()
        if self.config.create:
            try:
                sftp.stat(self.config.directory)
            except FileNotFoundError:
                sftp.mkdir(self.config.directory)

    def deliver(self, event: OutboxEvent) -> Receipt:
        name, body = self.render(event)
        sftp = self._session()
        where = f"{self.config.host}:{self.config.port}"
        try:
            upload_atomically(sftp, self.config.directory, name, body, request_size=self.config.request_size)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EIO, None):
                # the directory missing or not writable: an operator can fix it; retry later
                raise RetryableDelivery(
                    f"{self.name}: writing into {self.config.directory!r} on {where} failed: {describe(e)}") from e
            self.conn.close()
            raise RetryableDelivery(f"{self.name}: upload to {where} failed: {describe(e)}") from e
        except (EOFError, paramiko.SSHException) as e:
            self.conn.close()
            raise RetryableDelivery(f"{self.name}: upload to {where} failed: {describe(e)}") from e
        return Receipt(response=name)

    def close(self) -> None:
        self.conn.close()
