"""Search stems words, alike on SQLite and PostgreSQL (migration 0007; gallery/search.py): "foxes" finds "fox" and
"fox" finds "foxes". The same queries give the same answers on both databases (this module runs on each), written
out here by hand rather than computed, so a change of stemmer on either side shows up as a failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, insert, text
from sqlalchemy.orm import Session

from studiolo.db import migrate
from studiolo.db.base import new_id
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery.models import Image
from studiolo.services import Services
from tests.conftest import PgDatabases

PROMPTS = {
    "fox": "a red fox in the snow",
    "foxes": "three foxes at dawn",
    "city": "a neon city at night",
    "cities": "ancient cities from above",
    "running": "horses running on a beach",
    "runner": "a marathon runner, oil painting",
    "painted": "a painted ceiling",
    "flies": "flies over a pond",
    "theory": "the theory of everything",
    "cafe": "a cafe in Paris",
}

# query -> the prompts (by key) it finds, on either database.
CASES = {
    "foxes": {"fox", "foxes"},
    "fox": {"fox", "foxes"},
    "FOXES snow": {"fox"},
    "cities": {"city", "cities"},
    "city": {"city", "cities"},
    "horse": {"running"},
    "running": {"running", "runner"},  # "run" is a prefix of "runner" (stems are prefix-matched, as words were)
    "runner": {"runner"},
    "paintings": {"runner", "painted"},
    "painted": {"runner", "painted"},
    "the": {"fox", "theory"},  # no stop words on either side: "the" is a word like any other
    "theories": {"theory"},
    "fly": set(),  # Porter's original stemmer (both sides) leaves "fly" and "flies" apart
    "cafes": {"cafe"},
    "zebras": set(),
}


def add_images(session: Session, prompts: dict[str, str]) -> dict[str, str]:
    """One image per prompt for the local owner; returns image id -> prompt key. A Core insert of the columns given
    (and those with defaults), so it also fits a database at an older revision than the models (the migration test)."""
    ids: dict[str, str] = {}
    for key, prompt in prompts.items():
        image_id = new_id()
        values = {
            "id": image_id,
            "owner_id": LOCAL_USER_ID,
            "prompt": prompt,
            "model_id": "echo",
            "seed": 1,
            "steps": 1,
            "guidance": 0.0,
            "width": 64,
            "height": 64,
            "original_key": f"images/{key}.png",
            "thumbnail_keys": {},
            "search_text": prompt,
        }
        session.execute(insert(Image.__table__).values(values))
        ids[image_id] = key
    return ids


@pytest.fixture
def images(services: Services) -> dict[str, str]:
    with services.db.session() as session:
        return add_images(session, PROMPTS)


@pytest.mark.parametrize("q", list(CASES))
def test_the_same_queries_find_the_same_images_on_either_database(
    services: Services, images: dict[str, str], q: str
) -> None:
    found = {images[i.id] for i in services.gallery.list(LOCAL_USER_ID, q=q, limit=100).items}
    assert found == CASES[q]


def test_a_search_through_the_api_stems_too(client: TestClient, images: dict[str, str]) -> None:
    r = client.get("/api/v1/images", params={"q": "foxes"})
    assert r.status_code == 200, r.text
    assert {images[i["id"]] for i in r.json()["items"]} == {"fox", "foxes"}


def matching(conn: Connection, word: str, pg_config: str = "studiolo_porter") -> set[str]:
    """The prompts a search for ``word`` finds, asked of the index as gallery/search.py asks it."""
    if conn.dialect.name == "sqlite":
        sql = "SELECT prompt FROM images WHERE rowid IN (SELECT rowid FROM images_fts WHERE images_fts MATCH :q)"
        return set(conn.scalars(text(sql), {"q": f'"{word}"*'}))
    sql = "SELECT prompt FROM images WHERE search_vector @@ to_tsquery(CAST(:cfg AS regconfig), :q)"
    return set(conn.scalars(text(sql), {"cfg": pg_config, "q": f"{word}:*"}))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migration_reindexes_existing_images_and_goes_back(
    tmp_path: Path, backend: str, pg_databases: PgDatabases | None
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
        migrate.upgrade(url, "0006")
    elif pg_databases is None:
        pytest.skip("STUDIOLO_TEST_DATABASE_URL names no PostgreSQL server")
    else:
        url = pg_databases.fresh()
        migrate.downgrade(url, "0006")
    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            add_images(session, {"fox": PROMPTS["fox"], "foxes": PROMPTS["foxes"]})
        with engine.connect() as conn:  # before 0007: no stems ('simple' on PostgreSQL)
            assert matching(conn, "foxes", pg_config="simple") == {PROMPTS["foxes"]}
        migrate.upgrade(url, "0007")
        with engine.connect() as conn:  # the rows stored before are indexed again, stemmed
            assert matching(conn, "foxes") == {PROMPTS["fox"], PROMPTS["foxes"]}
        migrate.downgrade(url, "0006")
        with engine.connect() as conn:
            assert matching(conn, "foxes", pg_config="simple") == {PROMPTS["foxes"]}
        migrate.upgrade(url, "0007")
    finally:
        engine.dispose()
        if backend == "postgresql" and pg_databases is not None:
            pg_databases.drop(url)
