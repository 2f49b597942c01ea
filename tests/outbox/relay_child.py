"""A relay process for the SIGKILL test: ``python -m tests.outbox.relay_child URL OWNER JSON``."""

from __future__ import annotations

import sys
import threading

import orjson

from bridge.db import Database
from bridge.settings import DestinationConfig, RelayConfig
from outbox.relay import Relay


def main() -> None:
    url, owner, spec = sys.argv[1], sys.argv[2], orjson.loads(sys.argv[3])
    relay = Relay(Database(url), {n: DestinationConfig.model_validate(b) for n, b in spec["destinations"].items()},
                  RelayConfig(**spec["relay"]), owner=owner)
    relay.start()
    print("started", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
