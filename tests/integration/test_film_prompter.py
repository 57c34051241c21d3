"""A film's storyboard with the optional chat provider configured (STUDIOLO_FILM_CHAT_API_BASE pointing at the local
OpenAI-compatible server of tests/chat_server.py): the scenes' image prompts are the provider's, on create and on a
resplit; with the provider failing, the film is still made, with the rule-based prompts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film.schemas import FilmCreate, FilmPatch
from studiolo.domain.film.script import scene_prompt
from studiolo.services import Services
from tests.chat_server import ChatServer, provider_prompt, scenes_of
from tests.helpers import app_with, auth_headers

FILMS = "/api/v1/films"
SCRIPT = (
    "The lighthouse keeper woke before dawn. He climbed the spiral stairs with a lamp in his hand.\n\n"
    "Outside, the storm had passed. The sea was calm and grey, and gulls circled the rocks below.\n\n"
    "Dr. Ada Reyes arrived by boat at 7.30 in the morning. She carried a small wooden box."
)


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    with ChatServer(api_key="sk-film-chat") as server:
        yield server


@pytest.fixture
def films(settings_factory: Callable[..., Any], chat: ChatServer) -> Iterator[tuple[Services, TestClient]]:
    chat.mode = "good"
    chat.requests.clear()
    overrides = {
        "film_chat_api_base": chat.url,
        "film_chat_api_key": "sk-film-chat",
        "film_chat_model": "studio-llm",
        "film_chat_timeout_seconds": 10,
    }
    with app_with(settings_factory, **overrides) as (services, client):
        client.headers.update(auth_headers(services))
        yield services, client


def create(client: TestClient, **fields: Any) -> dict[str, Any]:
    r = client.post(FILMS, json={"title": "Keeper", "script": SCRIPT, "style": "cinematic", **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def rule_based(film: dict[str, Any]) -> list[str]:
    return [scene_prompt(s["text"], podcast=film["podcast"]) for s in film["scenes"]]


def test_the_storyboard_s_prompts_are_the_provider_s(films: tuple[Services, TestClient], chat: ChatServer) -> None:
    _, client = films
    film = create(client)
    texts = [s["text"] for s in film["scenes"]]
    assert len(texts) >= 2
    assert [s["prompt"] for s in film["scenes"]] == [provider_prompt(t) for t in texts]
    assert [s["prompt"] for s in film["scenes"]] != rule_based(film)
    # what was asked: the key, the model, the film's title and style, and every scene's text in order
    assert len(chat.requests) == 1
    request = chat.requests[0]
    assert request["headers"]["authorization"] == "Bearer sk-film-chat"
    assert request["json"]["model"] == "studio-llm"
    assert scenes_of(request["json"]) == [" ".join(t.split()) for t in texts]
    user = request["json"]["messages"][1]["content"]
    assert "Keeper" in user and "cinematic" in user
    # stored: a reload shows the same prompts
    again = client.get(f"{FILMS}/{film['id']}").json()
    assert [s["prompt"] for s in again["scenes"]] == [s["prompt"] for s in film["scenes"]]


@pytest.mark.parametrize("mode", ["error", "wrong_count", "fenced"])
def test_a_failing_provider_never_refuses_a_film(
    films: tuple[Services, TestClient], chat: ChatServer, mode: str
) -> None:
    _, client = films
    chat.mode = mode
    film = create(client)
    prompts = [s["prompt"] for s in film["scenes"]]
    if mode == "fenced":  # not a failure: the JSON in a Markdown fence is read
        assert prompts == [provider_prompt(s["text"]) for s in film["scenes"]]
    else:
        assert prompts == rule_based(film)
    assert len(chat.requests) == 1


def test_a_resplit_asks_the_provider_about_the_new_scenes(films: tuple[Services, TestClient], chat: ChatServer) -> None:
    _, client = films
    chat.mode = "error"
    film = create(client)
    assert [s["prompt"] for s in film["scenes"]] == rule_based(film)

    chat.mode = "good"
    script = "A fox crossed the frozen river at night.\n\nIn the morning the village found its tracks in the snow."
    r = client.patch(f"{FILMS}/{film['id']}", json={"script": script, "title": "Fox", "resplit": True})
    assert r.status_code == 200, r.text
    resplit = r.json()
    texts = [s["text"] for s in resplit["scenes"]]
    assert "fox" in texts[0].lower()
    assert [s["prompt"] for s in resplit["scenes"]] == [provider_prompt(t) for t in texts]
    asked = chat.requests[-1]["json"]
    assert scenes_of(asked) == [" ".join(t.split()) for t in texts]  # the patched script's scenes
    assert "Fox" in asked["messages"][1]["content"]

    # an edit without resplit asks nothing; a resplit with the provider failing keeps the rule-based prompts
    asked_before = len(chat.requests)
    client.patch(f"{FILMS}/{film['id']}", json={"title": "Fox II"}).raise_for_status()
    assert len(chat.requests) == asked_before
    chat.mode = "wrong_count"
    again = client.patch(f"{FILMS}/{film['id']}", json={"resplit": True}).json()
    assert [s["text"] for s in again["scenes"]] == texts
    assert [s["prompt"] for s in again["scenes"]] == rule_based(again)
    assert len(chat.requests) == asked_before + 1


def test_without_a_provider_nothing_is_asked(client: TestClient, chat: ChatServer) -> None:
    chat.requests.clear()
    film = create(client)
    assert [s["prompt"] for s in film["scenes"]] == rule_based(film)
    assert chat.requests == []


class _WritingPrompter:
    """A prompter that, while it is asked, writes to the same database from another thread (another user of the
    server): it finishes only if no transaction of the storyboard is held across the provider's call."""

    def __init__(self, write: Callable[[], object]) -> None:
        self.write = write
        self.wrote = False

    def rewrite(self, scenes: Sequence[str], *, style: str | None, title: str) -> list[str]:
        def run() -> None:
            self.write()
            self.wrote = True

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout=30)  # a deadlock guard, not a timing: a held lock would keep the write waiting
        assert self.wrote, "the write waited on the storyboard's transaction"
        return [f"provider {i}" for i in range(len(scenes))]


def test_the_provider_is_asked_outside_any_transaction(services: Services) -> None:
    film = services.film
    other = film.create(LOCAL_USER_ID, FilmCreate(title="Other", script=SCRIPT))
    renamed = _WritingPrompter(lambda: film.update(LOCAL_USER_ID, other.id, FilmPatch(title="Renamed")))
    film.prompter = renamed
    made = film.create(LOCAL_USER_ID, FilmCreate(title="Keeper", script=SCRIPT))
    assert renamed.wrote and film.get(LOCAL_USER_ID, other.id).title == "Renamed"
    assert [s.prompt for s in made.scenes] == [f"provider {i}" for i in range(len(made.scenes))]

    # a resplit: while the provider is asked, the same film's script changes; the storyboard is of the script as
    # written last, and its prompts are the rule-based ones (the provider was asked about other scenes)
    changed = "A fox crossed the frozen river at night."
    film.prompter = _WritingPrompter(lambda: film.update(LOCAL_USER_ID, made.id, FilmPatch(script=changed)))
    after = film.update(LOCAL_USER_ID, made.id, FilmPatch(resplit=True))
    assert [s.text for s in after.scenes] == [changed]
    assert [s.prompt for s in after.scenes] == [scene_prompt(changed, podcast=False)]
