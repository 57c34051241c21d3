"""The film studio's pages through HTTP (issue 16): /films, its Trash and the new-film form, /films/{id}, the nav
link, and the plan refusal said before a render. Their scripts run in tests/e2e/test_web_films.py (Playwright).

The pages are shells the scripts fill from the film API; what the server puts in them (the limits, the styles, the
stage names, the refusal) needs no film route, so these hold without it.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from studiolo.domain.accounts.models import User
from studiolo.domain.film.models import FilmProject
from tests.helpers import create_user
from tests.integration.test_web_billing_pages import ORIGIN, get, studio, text
from tests.integration.test_web_pages import HTML, Page

__all__ = ["studio"]
STAGES = ["images", "narration", "music", "mix", "motion", "subtitles", "encode", "thumbnail", "check"]


def test_films_page_lists_new_film_form_and_nav_link(studio: Any) -> None:
    services, browser = studio("off")
    user = browser("fay@example.com")
    page = get(user, "/films")
    assert page.headings == ["Films"]
    nav = [a["href"] for a in page.all("a") if a.get("href") in ("/generate", "/gallery", "/films")]
    assert nav[:3] == ["/generate", "/gallery", "/films"]
    assert page.all("a", href="/films", **{"aria-current": "page"})
    assert page.all("a", href="/films?view=trash")
    form = page.all("form", id="film-form")[0]
    assert form["data-max-words"] == str(services.settings.film_max_words)
    names = {a.get("name") for t, a in page.elements if t in ("input", "select", "textarea")}
    expected = {"title", "script", "style", "aspect", "resolution", "target_seconds", "voice", "speed", "music",
                "podcast", "burn_subtitles"}  # fmt: skip
    assert expected <= names, expected - names
    aspects = ["16:9", "9:16", "1:1"]
    assert [o["value"] for o in page.all("option") if o.get("value") in aspects] == aspects
    assert page.all("button", id="voice-sample")
    assert page.all("input", id="film-characters", type="file")
    assert not page.all("div", id="film-refusal")  # billing off: nothing to refuse


def test_films_trash_view_and_film_page_shell(studio: Any) -> None:
    _, browser = studio("off")
    user = browser("gus@example.com")
    trash = get(user, "/films?view=trash")
    assert trash.headings == ["Films in the Trash"]
    assert trash.all("ul", id="film-list", **{"data-trashed": "true"})
    assert not trash.all("form", id="film-form")
    film_id = str(uuid.uuid4())
    page = get(user, f"/films/{film_id}")
    assert page.all("div", id="film", **{"data-film": film_id})
    assert [li["data-stage"] for li in page.all("li") if "data-stage" in li] == STAGES
    assert page.all("a", href="/films", **{"aria-current": "page"})  # the nav marks Films on a film's page too
    assert page.all("template", id="scene-template")
    # Not an id: the 404 page, never a request to the API with it.
    get(user, "/films/..%2Fadmin", status=404)
    get(user, "/films/not-a-film", status=404)
    signed_out = browser()
    r = signed_out.get("/films", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=%2Ffilms"


def test_a_plan_without_the_film_studio_is_said_with_the_upgrade_link(studio: Any) -> None:
    services, browser = studio("quotas")
    user = browser("hal@example.com")
    page = get(user, "/films")
    refusal = page.all("div", id="film-refusal")
    assert refusal and refusal[0]["data-code"] == "plan_forbids"
    assert "Your Free plan does not include the film studio." in text(page)
    assert page.all("a", href="/pricing", **{"class": "btn btn-sm btn-primary refusal-upgrade"})
    # On Basic (film included) the refusal is gone; administrators are never refused.
    with services.db.session() as session:
        user_id = session.execute(select(User.id).where(User.email == "hal@example.com")).scalar_one()
    services.billing.assign_plan(user_id, "basic", actor_id=None, origin=ORIGIN)
    assert not get(user, "/films").all("div", id="film-refusal")
    admin = browser("root@example.com", role="admin")
    assert not get(admin, "/films").all("div", id="film-refusal")


def test_watch_page_plays_a_public_film_for_anyone_and_nothing_else(studio: Any) -> None:
    services, browser = studio("off")
    owner = create_user(services, "ivy@example.com")
    keys = {"mp4": "film.mp4", "srt": "film.srt", "vtt": "film.vtt", "thumb": "thumbnail.jpg"}
    outputs: dict[str, Any] = {k: f"films/x/{v}" for k, v in keys.items()}
    outputs.update(duration=62.4, width=1280, height=720, bytes=1000)
    with services.db.session() as session:
        film = FilmProject(owner_id=owner, title="Harbour <at> night", script="Boats sleep.", voice="espeak:en",
                           public=True, share_token="tok_public-1", outputs=outputs, status="rendered")  # fmt: skip
        session.add(film)
        session.flush()
        film_id = film.id
    visitor = browser()  # nobody signed in
    r = visitor.get("/watch/tok_public-1", headers=HTML)
    assert r.status_code == 200 and r.headers["referrer-policy"] == "no-referrer"
    page = Page(r.text)
    assert page.headings == ["Harbour <at> night"]
    base = "/api/v1/films/shared/tok_public-1/files"
    [video] = page.all("video")
    assert video["src"] == f"{base}/film.mp4" and video["poster"] == f"{base}/thumbnail.jpg"
    [track] = page.all("track")
    assert track["kind"] == "subtitles" and track["src"] == f"{base}/film.vtt" and "default" in track
    assert page.all("a", href=f"{base}/film.srt?download=true")
    assert "1:02" in text(page)
    # Private again, in the Trash, or a token that never was: the same 404 page.
    with services.db.session() as session:
        session.get_one(FilmProject, film_id).public = False
    get(visitor, "/watch/tok_public-1", status=404)
    get(visitor, "/watch/no-such-token", status=404)
    get(visitor, "/watch/bad%20token", status=404)
