"""Storage: the engine, the tables and the Alembic migrations.

``Database`` is the one gateway to SQL. Driver exceptions are translated to
:class:`bridge.errors.StorageError` here, once; integrity violations stay
visible (as ``sqlalchemy.exc.IntegrityError``) to the callers that race on a
unique key on purpose (landing, leases).
"""

from bridge.db.audit import audit
from bridge.db.engine import Database, like_escape, utcnow

__all__ = ["Database", "audit", "like_escape", "utcnow"]
