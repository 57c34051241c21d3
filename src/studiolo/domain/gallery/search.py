"""Full-text search of the gallery: every word of ``q`` prefix-matched against ``images.search_text``.

Words are stemmed on both sides, with the same algorithm on both databases (Porter's; migration 0007): "foxes" finds
"fox" and "fox" finds "foxes". SQLite's FTS5 table tokenizes with ``porter``; PostgreSQL's vector and query use the
``studiolo_porter`` configuration (the Snowball ``porter`` stemmer, no stop words), so a query answers alike on both
(tests/integration/test_search_stemming.py).

SQLite asks FTS5 for the matching rows. PostgreSQL cannot be left to its planner: it guesses the same
~2% for every prefix term, so a word held by 40,000 of 1,000,000 images was fetched in full through the
GIN index and sorted (200-300 ms), and a rare word could walk every row instead (3 s). ``newest_matches``
chooses the plan from what it sees, never from estimates:

1. Walk the newest candidates (the caller's filters, newest first) and test each row's stored vector.
   A frequent word fills the page within a few thousand rows.
2. When the walk came up short but found some matches, their rate says how many more rows would fill the
   page; when that is a short walk, take it.
3. Otherwise ask the GIN index for the older matches only; few of them exist, or the walk would have
   found them, which is where an inverted index shines.

The parts cover adjacent ranges of ids (each ends at the oldest row the last one saw), so the page equals
the plain ``ORDER BY id DESC`` one; the caller reads them in one snapshot. Figures: ``bench/queue.py``;
the boundaries: ``tests/integration/test_gallery_search.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Select, TextClause, func, literal_column, select, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Session

from studiolo.domain.gallery.models import Image
from studiolo.errors import InvalidInput

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 16
# PostgreSQL only: a generated column (migration 0003), not mapped by the ORM, which never writes it.
_VECTOR = literal_column("images.search_vector", TSVECTOR)
# PostgreSQL's text search configuration (migration 0007): the vector is computed with it, so queries must be too.
PG_CONFIG = "studiolo_porter"

FIRST_WINDOW = 2_000
"""Rows the first walk tests: reading a stored vector costs ~0.35 µs a row, so this is under a millisecond."""
WALK_MAX = 40_000
"""Most rows a second walk tests (15-20 ms); taken when the first walk's hit rate says half as many fill the page."""


def search_words(q: str) -> list[str]:
    words = _WORD.findall(q)[:MAX_WORDS]
    if not words:
        raise InvalidInput("The search needs at least one word.", code="invalid_search", details={"q": q})
    return words


def fts5_clause(words: Sequence[str]) -> TextClause:
    """SQLite: the rows FTS5 matches. Each word quoted (so FTS5 operators in user text are inert) and prefix-matched;
    FTS5 stems a quoted word with the table's tokenizer before matching its prefix."""
    match = " ".join('"' + w.replace('"', "") + '"*' for w in words)
    return text("images.rowid IN (SELECT rowid FROM images_fts WHERE images_fts MATCH :fts_q)").bindparams(fts_q=match)


def _matches(vector: ColumnElement[str], words: Sequence[str]) -> ColumnElement[bool]:
    # The query in a scalar subquery is parsed once per statement. Written inline it is parsed again for every row
    # once psycopg has prepared the statement (its 6th run) and PostgreSQL picks a generic plan: 4x slower walks.
    query = select(func.to_tsquery(PG_CONFIG, " & ".join(w + ":*" for w in words))).scalar_subquery()
    return vector.bool_op("@@")(query)


def _walk(session: Session, candidates: Select[Image], words: Sequence[str], rows: int, hits: int) -> list[Image]:
    """The newest ``hits`` matches among the newest ``rows`` candidates, each row tested on its stored vector.

    The LIMIT inside keeps PostgreSQL on the ordered (owner_id, id) index, stopping as soon as the page is full.
    Ids first, rows after: SQLAlchemy builds a two-column window in a quarter of the time of a full-row one.
    """
    window = (
        candidates.with_only_columns(Image.id, _VECTOR.label("search_vector"))
        .order_by(Image.id.desc())
        .limit(rows)
        .subquery()
    )
    newest = select(window.c.id).where(_matches(window.c.search_vector, words)).order_by(window.c.id.desc()).limit(hits)
    return list(session.scalars(select(Image).where(Image.id.in_(newest)).order_by(Image.id.desc())))


def _floor(session: Session, candidates: Select[Image], rows: int) -> str | None:
    """Id of the ``rows``-th newest candidate (the oldest a walk of ``rows`` saw); None when fewer exist."""
    stmt = candidates.with_only_columns(Image.id).order_by(Image.id.desc()).offset(rows - 1).limit(1)
    return session.scalar(stmt)


def _indexed(session: Session, candidates: Select[Image], words: Sequence[str], hits: int) -> list[Image]:
    """The newest ``hits`` matching candidates, found through the GIN index.

    MATERIALIZED keeps the planner from walking the ordered index for a rare word (the LIMIT would tempt it).
    """
    found = (
        candidates.with_only_columns(Image.id).where(_matches(_VECTOR, words)).cte("found").prefix_with("MATERIALIZED")
    )
    newest = select(found.c.id).order_by(found.c.id.desc()).limit(hits)
    return list(session.scalars(select(Image).where(Image.id.in_(newest)).order_by(Image.id.desc())))


def newest_matches(
    session: Session,
    candidates: Select[Image],
    words: Sequence[str],
    n: int,
    *,
    first_window: int = FIRST_WINDOW,
    walk_max: int = WALK_MAX,
) -> list[Image]:
    """PostgreSQL: the newest ``n`` of ``candidates`` (images already filtered) that match every word, newest first."""
    found = _walk(session, candidates, words, first_window, n)
    if len(found) == n or (floor := _floor(session, candidates, first_window)) is None:
        return found
    older = candidates.where(Image.id < floor)
    if found and (n - len(found)) * first_window / len(found) <= walk_max / 2:
        found += _walk(session, older, words, walk_max, n - len(found))
        if len(found) == n or (floor := _floor(session, older, walk_max)) is None:
            return found
        older = candidates.where(Image.id < floor)
    return found + _indexed(session, older, words, n - len(found))


def merge_index(session: Session) -> None:
    """SQLite: merge the full-text index into one segment, which drops the words of deleted rows for good.

    FTS5 records a deletion as a marker in a new segment; the deleted row's words stay in the older segments
    until they happen to be merged (secure_delete does not reach them). A merge rewrites the whole index: about
    a second per 100,000 images on the project's 2-core machines, so it runs once per purge (an account deleted, the
    Trash emptied, images purged at once or by housekeeping, each purging many rows), never when an image is only
    moved to the Trash. (FTS5's own 'secure-delete' option would make this unnecessary, but it needs SQLite 3.42;
    Debian 12 ships 3.40.1.) PostgreSQL: nothing to do (its index is a column of the row itself)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("INSERT INTO images_fts(images_fts) VALUES('optimize')"))
