"""Gallery search pages: on PostgreSQL a search walks the newest rows, may walk further, then asks the GIN index for
the rest (studiolo.domain.gallery.search). Whatever window sizes it runs with, every page must equal the plain
answer: each word prefix-matched, the owner's rows only, newest first, keyset cursor. On SQLite (FTS5) the sizes
change nothing and the same answers hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import event

from studiolo.db.base import new_id
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery.models import Collection, CollectionItem, Image
from studiolo.domain.gallery.service import GalleryService
from studiolo.services import Services
from tests.helpers import create_user

WORD = re.compile(r"\w+")
# Where "fox" (or "foxglove", a prefix match) sits among the owner's 40 images, oldest first: a run at each end, a
# few alone in between, long gaps, so pages of 3 start and end inside and outside every window.
FOX = {0, 1, 2, 9, 17, 18, 25, 33, 34, 35, 36, 37, 38, 39}
GLOVE = {2, 18, 36}
# (first window, most rows of the second walk): one walk that sees everything; a first walk too short to fill a page
# followed by the GIN index; a second walk, then the index; walks only.
WINDOWS = [(1000, 1000), (1, 1), (2, 5), (2, 24), (3, 60)]


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    style: str
    starred: bool


def prompt(i: int) -> str:
    animal = ("foxglove" if i in GLOVE else "fox") if i in FOX else ("owl", "hare", "newt")[i % 3]
    return f"{animal} n{i} {'winter' if i % 4 == 0 else 'summer'}"


@pytest.fixture
def gallery(services: Services) -> Iterator[list[Row]]:
    """40 images of the local owner (oldest first) interleaved with another user's matching ones."""
    other = create_user(services, "other@example.com")
    rows: list[Row] = []
    with services.db.session() as session:
        for i in range(40):
            for owner in (LOCAL_USER_ID, other):
                text = prompt(i) if owner == LOCAL_USER_ID else f"fox foxglove n{i} winter summer"
                img = Image(
                    id=new_id(),  # ids are time-ordered: set here so insertion order is their order
                    owner_id=owner,
                    prompt=text,
                    model_id="echo",
                    style="ink" if i % 2 else "oil",
                    starred=i % 3 == 0,
                    seed=i,
                    steps=1,
                    guidance=0.0,
                    width=64,
                    height=64,
                    original_key=f"images/{owner}-{i}.png",
                    thumbnail_keys={},
                    search_text=text,
                )
                session.add(img)
                session.flush()
                if owner == LOCAL_USER_ID:
                    rows.append(Row(img.id, text, img.style or "", img.starred))
    yield rows


def expected(rows: list[Row], q: str, style: str | None = None, starred: bool | None = None) -> list[str]:
    words = [w.lower() for w in WORD.findall(q)]

    def hit(r: Row) -> bool:
        tokens = WORD.findall(r.text.lower())
        return all(any(t.startswith(w) for t in tokens) for w in words)

    keep = [r for r in rows if hit(r) and style in (None, r.style) and starred in (None, r.starred)]
    return [r.id for r in reversed(keep)]


def all_pages(g: GalleryService, q: str, limit: int = 3, **filters: object) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = g.list(LOCAL_USER_ID, limit=limit, cursor=cursor, q=q, **filters)  # type: ignore[arg-type]
        pages.append([i.id for i in page.items])
        if page.next_cursor is None:
            return pages
        assert page.next_cursor == page.items[-1].id
        cursor = page.next_cursor


def chunks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)] or [[]]


@pytest.mark.parametrize(("window", "walk_max"), WINDOWS)
@pytest.mark.parametrize("q", ["fox", "FOX winter", "foxg", "n3", "fox n3", "n1 summer", "zebra", "fox zebra"])
def test_pages_equal_the_plain_answer_whatever_the_windows(
    services: Services, gallery: list[Row], q: str, window: int, walk_max: int
) -> None:
    g = GalleryService(services.db, services.store, search_window=window, search_walk_max=walk_max)
    want = expected(gallery, q)
    assert all_pages(g, q) == chunks(want, 3)
    assert all_pages(g, q, limit=100) == [want]


@pytest.mark.parametrize(("window", "walk_max"), WINDOWS)
def test_filters_narrow_the_walk_and_the_index_alike(
    services: Services, gallery: list[Row], window: int, walk_max: int
) -> None:
    g = GalleryService(services.db, services.store, search_window=window, search_walk_max=walk_max)
    assert all_pages(g, "fox", style="ink") == chunks(expected(gallery, "fox", style="ink"), 3)
    assert all_pages(g, "fox", starred=True) == chunks(expected(gallery, "fox", starred=True), 3)
    in_collection = [r.id for r in gallery[::2]]
    with services.db.session() as session:
        c = Collection(owner_id=LOCAL_USER_ID, name="evens")
        session.add(c)
        session.flush()
        session.add_all(CollectionItem(collection_id=c.id, image_id=i) for i in in_collection)
        collection_id = c.id
    want = [i for i in expected(gallery, "fox") if i in in_collection]
    assert all_pages(g, "fox", collection_id=collection_id) == chunks(want, 3)


def test_each_strategy_runs_where_it_should(services: Services, gallery: list[Row]) -> None:
    """The tiny windows above do reach the second walk and the GIN index (PostgreSQL; SQLite has one plan)."""
    if services.db.is_sqlite:
        pytest.skip("one FTS5 statement on SQLite")
    statements: list[str] = []

    def spy(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    def run(window: int, walk_max: int, q: str) -> tuple[int, bool]:
        """(walks, GIN asked) for the first page of ``q``."""
        statements.clear()
        GalleryService(services.db, services.store, search_window=window, search_walk_max=walk_max).list(
            LOCAL_USER_ID, limit=3, q=q
        )
        walks = sum("search_vector AS search_vector" in s for s in statements)
        return walks, any("MATERIALIZED" in s for s in statements)

    event.listen(services.db.engine, "before_cursor_execute", spy)
    try:
        assert run(1000, 1000, "fox") == (1, False)  # the newest rows fill the page
        assert run(1, 1, "newt") == (1, True)  # no hit in the newest row: straight to the index
        assert run(2, 24, "n38") == (2, True)  # one hit in two rows: a second walk, short of a page, then the index
        assert run(3, 60, "n3") == (2, False)  # three hits in three rows: the second walk fills the page
        assert run(1000, 1000, "zebra") == (1, False)  # the walk saw every row: nothing left to ask the index
    finally:
        event.remove(services.db.engine, "before_cursor_execute", spy)
