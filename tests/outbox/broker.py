"""A private RabbitMQ node for tests that restart the broker (the shared one on 5672 never is).

:func:`start_node` boots ``rabbitmq-server`` under its own node name
(``bridge-test-<pid>@localhost``) on two free loopback ports (AMQP and Erlang
distribution), with its database, logs and pid file in a temporary directory,
no plugins (the management plugin would fight the shared broker for port
15672) and no site-wide ``rabbitmq-env.conf`` (it names the shared node). The
scripts are run from ``/usr/lib/rabbitmq/bin`` as the current user: the
``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and its Erlang cookie.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pika
import pika.exceptions

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BrokerNode:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    base: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args], env=self.env, check=True,
                       timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def restart(self) -> None:
        """Stop and start the broker application (``stop_app`` then ``start_app``, in one CLI
        call: each CLI run boots an Erlang VM, seconds on a busy machine): every connection
        drops, the port refuses connections meanwhile, and durable queues come back with
        their persistent messages."""
        self.ctl("eval", "ok = rabbit:stop(), ok = rabbit:start().")
        self.wait_ready(60)

    def wait_ready(self, timeout: float) -> None:
        """Until the broker accepts an AMQP connection (cheaper than a CLI call per probe)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"private RabbitMQ node {self.name} exited ({self.process.returncode})")
            try:
                pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")).close()
                return
            except pika.exceptions.AMQPError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"private RabbitMQ node {self.name} not ready after {timeout:g}s") from None
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            self.ctl("stop", timeout=60)
            self.process.wait(30)
        except (subprocess.SubprocessError, OSError):
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def available() -> str | None:
    """Why a private node cannot start here, or None."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        return f"rabbitmq-server not installed ({RABBITMQ_BIN})"
    return None


def start_node(base: Path) -> BrokerNode:
    base.mkdir(parents=True, exist_ok=True)
    (base / "rabbitmq.conf").write_text("")
    (base / "rabbitmq-env.conf").write_text("")
    (base / "enabled_plugins").write_text("[].\n")
    name = f"bridge-test-{os.getpid()}@localhost"
    port, dist = _free_port(), _free_port()
    env = {**os.environ, "RABBITMQ_NODENAME": name, "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
           "ERL_EPMD_ADDRESS": "127.0.0.1",
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_PID_FILE": str(base / "node.pid"), "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
           "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
           "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins")}
    with open(base / "server.out", "wb") as out:
        proc = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    node = BrokerNode(name, port, proc, env, base)
    try:
        node.wait_ready(180)
        node.ctl("await_startup", "--timeout", "60")  # the node agrees it has fully booted
    except (subprocess.SubprocessError, OSError, RuntimeError, TimeoutError) as exc:
        tail = (base / "server.out").read_text(errors="replace")[-2000:]
        node.stop()
        raise RuntimeError(f"private RabbitMQ node {name} did not start: {exc}\n{tail}") from exc
    return node
