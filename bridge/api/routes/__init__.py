"""One router per resource; :mod:`bridge.api.app` includes each under ``/v1`` (``/healthz`` at the root)."""
