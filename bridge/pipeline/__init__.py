"""The pipeline: land raw bytes durably, then parse, map and commit them.

``land`` is the durability point: after it commits, a crash loses nothing.
``process`` turns a landed file into records, events and failures, resuming
from the last committed message. ``reprocess`` re-runs failed messages.
"""
