"""bridge: legacy healthcare files and messages in, canonical records and events out.

The flow of one unit of input (see ``ARCHITECTURE.md`` in the shared folder)::

    source -> land -> parse -> map -> commit -> relay -> destination

``bridge`` owns settings, storage, sources, the pipeline, the API and the CLI;
``parsers``, ``mappings`` and ``outbox`` own their roles.
"""

__version__ = "0.1.0"
