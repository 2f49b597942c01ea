"""crosswalk_state: a version of the crosswalks, bumped by a trigger on any change to them

Processing looked every crosswalk kind up afresh for each file, or for each
group of MLLP messages: the whole kind was read into memory, so with an item
master of tens of thousands of entries every group of 8 messages read them all.
Processes now keep the entries between files (``mappings.crosswalks``) and
read only this one-row version to know whether they are still current. The
version is bumped by triggers, not by bridge's code, so an entry changed by
any path (the CLI, the API, the console, a DBA's UPDATE) reaches every process
at its next file: on PostgreSQL once per statement, on SQLite (no statement
triggers) once per row. A later migration that rebuilds ``crosswalks`` on SQLite
(``batch_alter_table`` copies the table) must create the SQLite triggers again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 00:20:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_FUNCTION = """
CREATE FUNCTION bridge_crosswalk_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE crosswalk_state SET version = version + 1;
    RETURN NULL;
END $$
"""
_PG_TRIGGER = ("CREATE TRIGGER crosswalks_bump_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON crosswalks "
               "FOR EACH STATEMENT EXECUTE FUNCTION bridge_crosswalk_bump()")
_SQLITE_EVENTS = ("insert", "update", "delete")


def upgrade() -> None:
    op.create_table('crosswalk_state',
                    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column('version', sa.BigInteger(), server_default='0', nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    op.execute("INSERT INTO crosswalk_state (id, version) VALUES (1, 0)")
    if op.get_context().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        for what in _SQLITE_EVENTS:
            op.execute(f"CREATE TRIGGER crosswalks_bump_version_{what} AFTER {what.upper()} ON crosswalks "
                       "BEGIN UPDATE crosswalk_state SET version = version + 1; END")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER crosswalks_bump_version ON crosswalks")
        op.execute("DROP FUNCTION bridge_crosswalk_bump()")
    else:
        for what in _SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER crosswalks_bump_version_{what}")
    op.drop_table('crosswalk_state')
