"""Alembic migrations and the ORM models describe the same schema, and migrations go down and up again."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from studiolo.db import migrate
from studiolo.db.models_registry import metadata
from tests.conftest import PgDatabases

# Expression indexes autogenerate cannot compare (it reports them as changed every time).
EXPRESSION_INDEXES = {"ix_jobs_owner_queue", "ix_images_search"}
# Columns only PostgreSQL has, which the ORM never maps: the stored tsvector the search reads (migration 0003).
UNMAPPED_COLUMNS = {("images", "search_vector")}
# Foreign keys SQLite holds as a column constraint (ALTER TABLE ADD COLUMN ... REFERENCES: rebuilding images would
# drop its full-text triggers), whose name and ON DELETE SQLAlchemy cannot reflect; checked with PRAGMA instead.
SQLITE_COLUMN_FKS = {
    ("images", "parent_id", "images", "id", "SET NULL"),
    ("images", "description_id", "descriptions", "id", "SET NULL"),
}


def _fk_columns(diff: object) -> tuple[str, str] | None:
    if isinstance(diff, tuple) and diff[0] in ("add_fk", "remove_fk"):
        fk = diff[1]
        return str(fk.parent.name), ",".join(c.name for c in fk.columns)
    return None


def _expected(diff: object, backend: str = "postgresql") -> bool:
    """Differences that are by design: expression and search indexes, SQLite's FTS5 shadow tables,
    PostgreSQL's stored search vector, and SQLite's column-level foreign keys (see SQLITE_COLUMN_FKS)."""
    if backend == "sqlite" and _fk_columns(diff) in {(t, c) for t, c, *_ in SQLITE_COLUMN_FKS}:
        return True
    if isinstance(diff, tuple) and diff[0] in ("add_index", "remove_index"):
        return str(diff[1].name) in EXPRESSION_INDEXES
    if isinstance(diff, tuple) and diff[0] == "remove_table":
        return str(diff[1].name).startswith("images_fts")
    if isinstance(diff, tuple) and diff[0] == "remove_column":
        return (diff[2], diff[3].name) in UNMAPPED_COLUMNS
    return False


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_match_models_and_round_trip(tmp_path: Path, backend: str, pg_databases: PgDatabases | None) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    elif pg_databases is None:
        pytest.skip("STUDIOLO_TEST_DATABASE_URL names no PostgreSQL server")
    else:
        url = pg_databases.fresh()  # an empty database would do as well; this one is at head already
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        real = [d for d in diffs if not _expected(d, backend)]
        assert real == []
        if backend == "sqlite":
            with engine.connect() as conn:
                for table, column, referred, referred_column, on_delete in SQLITE_COLUMN_FKS:
                    fks = conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})").mappings().all()
                    assert {
                        (fk["from"], fk["table"], fk["to"], fk["on_delete"]) for fk in fks if fk["from"] == column
                    } == {(column, referred, referred_column, on_delete)}
        migrate.downgrade(url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        migrate.upgrade(url)
        assert {"jobs", "images", "collections", "models", "users"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
