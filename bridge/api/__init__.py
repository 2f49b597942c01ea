"""The HTTP API: FastAPI under ``/v1`` (see :func:`bridge.api.app.create_app`)."""
