"""search with stemming: "foxes" finds "fox" and "fox" finds "foxes", alike on SQLite and PostgreSQL

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-20 11:00:00.000000

Both databases now stem every word with the same algorithm, Martin Porter's original stemmer: FTS5's ``porter``
tokenizer on SQLite, and on PostgreSQL the Snowball ``porter`` stemmer (the same algorithm, shipped with every
PostgreSQL) in a text search configuration of our own, ``studiolo_porter``. PostgreSQL's ``english`` configuration
was not taken: it stems with Porter2 (so "fly" finds "flies" there and not on SQLite) and drops stop words (so
"the" matches every image there, and only those with a word starting with "the" on SQLite). Searches keep
prefix-matching each word, which the stems share ("running" and "runner" both start with "run").

Existing rows are re-indexed: the FTS5 table is rebuilt from ``images`` (SQLite), and the generated tsvector column
is recomputed, which rewrites the table once (PostgreSQL, as 0003 did: about 45 s per million rows on 2 cores).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Every token type that holds letters; numbers and the rest keep the 'simple' mapping copied below.
_WORD_TOKENS = "asciiword, asciihword, hword_asciipart, word, hword, hword_part, numword, numhword, hword_numpart"


def _fts5(tokenize: str) -> None:
    op.execute("DROP TABLE IF EXISTS images_fts")
    op.execute(
        "CREATE VIRTUAL TABLE images_fts USING fts5("
        f"search_text, content='images', content_rowid='rowid', tokenize='{tokenize}')"
    )
    # The triggers (0001) write to the table by name and keep working; 'rebuild' indexes every existing row.
    op.execute("INSERT INTO images_fts(images_fts) VALUES('rebuild')")


def _vector(config: str) -> None:
    op.execute("DROP INDEX IF EXISTS ix_images_search")
    op.execute("ALTER TABLE images DROP COLUMN IF EXISTS search_vector")
    op.execute(
        "ALTER TABLE images ADD COLUMN search_vector tsvector "
        f"GENERATED ALWAYS AS (to_tsvector('{config}'::regconfig, search_text)) STORED"
    )
    op.execute("CREATE INDEX ix_images_search ON images USING GIN (search_vector)")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _fts5("porter unicode61 remove_diacritics 2")
    elif dialect == "postgresql":
        op.execute("CREATE TEXT SEARCH DICTIONARY studiolo_porter_stem (TEMPLATE = snowball, Language = porter)")
        op.execute("CREATE TEXT SEARCH CONFIGURATION studiolo_porter (COPY = simple)")
        op.execute(
            f"ALTER TEXT SEARCH CONFIGURATION studiolo_porter "
            f"ALTER MAPPING FOR {_WORD_TOKENS} WITH studiolo_porter_stem"
        )
        _vector("studiolo_porter")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _fts5("unicode61 remove_diacritics 2")
    elif dialect == "postgresql":
        _vector("simple")
        op.execute("DROP TEXT SEARCH CONFIGURATION IF EXISTS studiolo_porter")
        op.execute("DROP TEXT SEARCH DICTIONARY IF EXISTS studiolo_porter_stem")
