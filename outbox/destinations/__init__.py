"""Outbox destinations, one module each; the contract is in :mod:`outbox.destinations.base`."""
