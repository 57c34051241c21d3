"""Publishing a film to YouTube, end to end over real HTTP: the app (TestClient) connects the Google account
through the local OIDC provider (tests/oidc_provider.py, incremental consent for the YouTube scopes), then uploads
a real MP4 to a local server speaking the YouTube Data API's resumable protocol (tests/youtube_server.py), with the
film's SRT as captions; interrupted uploads go on from what the server says it holds."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from studiolo.app import create_app
from studiolo.db.base import utcnow
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.film.models import FilmProject, FilmPublication, ProviderToken
from studiolo.domain.film.youtube import CHUNK_UNIT
from studiolo.domain.film.youtube_google import CAPTIONS_SCOPE, UPLOAD_SCOPE
from studiolo.services import Services, build_services
from tests.helpers import auth_headers, create_user
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, LocalProvider
from tests.youtube_server import YouTubeServer

CONNECT = "/api/v1/auth/google/youtube"
CONNECTION = "/api/v1/films/youtube/connection"
SRT = "1\n00:00:00,000 --> 00:00:01,500\nHello from Studiolo.\n\n2\n00:00:01,500 --> 00:00:03,000\nThe end.\n"


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    p = LocalProvider()
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def youtube_api(provider: LocalProvider) -> Iterator[YouTubeServer]:
    server = YouTubeServer(provider.token_scopes)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def idp(provider: LocalProvider, youtube_api: YouTubeServer) -> LocalProvider:
    provider.reset()
    youtube_api.reset()
    return provider


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real H.264 MP4 of about a megabyte (noise compresses badly): several 256 KiB chunks."""
    out = tmp_path_factory.mktemp("youtube") / "film.mp4"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "nullsrc=s=320x240:r=10:d=2,geq=random(1)*255:128:128",
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p", str(out),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    data = out.read_bytes()
    assert len(data) > 3 * CHUNK_UNIT and data[4:8] == b"ftyp"
    return data


@pytest.fixture
def make_services(
    settings_factory: Any, idp: LocalProvider, youtube_api: YouTubeServer
) -> Iterator[Callable[[], Services]]:
    """Services on one database and data directory; calling it again is a restart of the server."""
    built: list[Services] = []
    settings = settings_factory(
        google_client_id=CLIENT_ID,
        google_client_secret=CLIENT_SECRET,
        google_discovery_url=f"{idp.url}/.well-known/openid-configuration",
        film_youtube_api_base=youtube_api.url,
        hub_timeout_seconds=5.0,
        retry_backoff_seconds=0.01,
    )

    def make() -> Services:
        svc = build_services(settings, upgrade_db=False)
        svc.youtube.chunk_bytes = CHUNK_UNIT  # several chunks for a small file
        built.append(svc)
        return svc

    yield make
    for svc in built:
        svc.close(timeout=10)


@pytest.fixture
def services(make_services: Callable[[], Services]) -> Services:
    return make_services()


def browser(services: Services, user_id: str = LOCAL_USER_ID) -> TestClient:
    c = TestClient(create_app(services=services, start_workers=False), follow_redirects=False)
    c.headers.update(auth_headers(services, user_id))
    return c


@pytest.fixture
def web(services: Services) -> Iterator[TestClient]:
    with browser(services) as c:
        yield c


def connect(web: TestClient, next_path: str = "/films/abc") -> tuple[dict[str, str], str]:
    """Consent at the (auto-approving) provider; returns the authorize query and where the app sent us after."""
    start = web.get(CONNECT, params={"next": next_path})
    assert start.status_code == 302, start.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    at_provider = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_provider.status_code == 302, at_provider.text
    back = at_provider.headers["location"]
    assert back.startswith("http://testserver/api/v1/auth/oauth/google/youtube/callback?")
    done = web.get(back)
    assert done.status_code == 302, done.text
    return query, done.headers["location"]


def make_film(services: Services, owner: str = LOCAL_USER_ID, *, mp4: bytes | None = None) -> str:
    with services.db.session() as session:
        film = FilmProject(owner_id=owner, title="The Lighthouse", script="A lighthouse at dusk.", voice="espeak:en")
        session.add(film)
        session.flush()
        film_id = film.id
    if mp4 is not None:
        base = f"films/{owner}/{film_id}"
        services.store.put(f"{base}/film.mp4", mp4, "video/mp4")
        services.store.put(f"{base}/film.srt", SRT.encode(), "application/x-subrip")
        with services.db.session() as session:
            session.get_one(FilmProject, film_id).outputs = {"mp4": f"{base}/film.mp4", "srt": f"{base}/film.srt"}
    return film_id


def wait_settled(services: Services, web: TestClient, film_id: str) -> dict[str, Any]:
    """The newest publication once its upload thread ended."""
    deadline = time.monotonic() + 60
    while True:
        items = web.get(f"/api/v1/films/{film_id}/youtube").json()
        if items and items[0]["status"] in ("done", "failed"):
            services.youtube.wait(items[0]["id"])
            item: dict[str, Any] = web.get(f"/api/v1/films/{film_id}/youtube").json()[0]
            return item
        if time.monotonic() > deadline:
            raise AssertionError(f"the upload did not settle: {items}")
        time.sleep(0.05)


def error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


# --- the connection ---------------------------------------------------------------------------------------
def test_connect_asks_for_the_youtube_scopes_with_incremental_consent_and_keeps_the_tokens_encrypted(
    services: Services, web: TestClient, idp: LocalProvider
) -> None:
    assert web.get(CONNECTION).json() == {"available": True, "connected": False, "scopes": []}
    query, landed = connect(web, "/films/abc")
    assert landed == "/films/abc?youtube=connected"
    assert set(query["scope"].split()) == {UPLOAD_SCOPE, CAPTIONS_SCOPE}
    assert query["include_granted_scopes"] == "true"
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == "http://testserver/api/v1/auth/oauth/google/youtube/callback"
    assert len(query["state"]) >= 32
    exchange = idp.token_requests[-1]
    assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]

    state = web.get(CONNECTION).json()
    assert state["connected"] is True and UPLOAD_SCOPE in state["scopes"]
    (access,) = idp.access_tokens
    (refresh,) = idp.refresh_tokens
    with services.db.session() as session:
        row = session.get_one(ProviderToken, (LOCAL_USER_ID, "google"))
        raw = (row.access_token, row.refresh_token or "")
        scopes = row.scopes
    assert access not in raw[0] and refresh not in raw[1]
    assert raw[0].startswith("v1.") and raw[1].startswith("v1.")
    tokens = services.youtube.google.tokens(LOCAL_USER_ID)
    assert tokens is not None and (tokens.access, tokens.refresh) == (access, refresh)
    # The ciphertexts are bound to their row: copied to another account, they do not open.
    stranger = create_user(services, "copycat@example.com")
    with services.db.session() as session:
        session.add(
            ProviderToken(user_id=stranger, provider="google", scopes=scopes, access_token=raw[0], refresh_token=raw[1])
        )
    assert services.youtube.google.connection(stranger).connected is False
    assert services.youtube.google.tokens(stranger) is None

    assert web.delete(CONNECTION).status_code == 204
    assert idp.revoked == [refresh]
    assert web.get(CONNECTION).json() == {"available": True, "connected": False, "scopes": []}


def test_a_callback_without_its_state_cookie_is_refused(services: Services, idp: LocalProvider) -> None:
    with browser(services) as first, browser(services) as other:
        start = first.get(CONNECT)
        back = httpx.get(start.headers["location"], follow_redirects=False).headers["location"]
        refused = other.get(back)  # another browser: no state cookie
        assert refused.status_code == 400 and error(refused)["code"] == "oauth_state_mismatch"
        assert other.get(CONNECTION).json()["connected"] is False


def test_declining_at_google_keeps_the_account_unconnected(
    services: Services, web: TestClient, idp: LocalProvider
) -> None:
    idp.behaviour.deny = True
    start = web.get(CONNECT)
    back = httpx.get(start.headers["location"], follow_redirects=False).headers["location"]
    declined = web.get(back)
    assert declined.status_code == 400 and error(declined)["code"] == "oauth_access_denied"
    assert web.get(CONNECTION).json()["connected"] is False
    assert idp.token_requests == []


def test_the_connect_route_needs_a_signed_in_session(services: Services, web: TestClient) -> None:
    with TestClient(create_app(services=services, start_workers=False), follow_redirects=False) as anonymous:
        assert anonymous.get(CONNECT).status_code == 401
        key = web.post("/api/v1/api-keys", json={"name": "cli", "scopes": ["read", "generate"]})
        assert key.status_code == 201, key.text
        by_key = anonymous.get(CONNECT, headers={"Authorization": f"Bearer {key.json()['key']}"})
        assert by_key.status_code == 403 and error(by_key)["code"] == "session_required"


def test_without_a_google_client_youtube_is_not_offered(settings_factory: Any) -> None:
    svc = build_services(settings_factory(), upgrade_db=False)
    try:
        with browser(svc) as web:
            assert web.get(CONNECTION).json() == {"available": False, "connected": False, "scopes": []}
            r = web.get(CONNECT)
            assert r.status_code == 404 and error(r)["code"] == "youtube_not_configured"
    finally:
        svc.close()


# --- uploads ----------------------------------------------------------------------------------------------
def test_upload_sends_the_mp4_in_chunks_then_the_captions(
    services: Services, web: TestClient, youtube_api: YouTubeServer, mp4: bytes
) -> None:
    connect(web)
    film = make_film(services, mp4=mp4)
    accepted = web.post(
        f"/api/v1/films/{film}/youtube",
        json={
            "title": "Lighthouse",
            "description": "Made with Studiolo",
            "tags": ["film", "ai"],
            "privacy": "unlisted",
        },
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["total_bytes"] == len(mp4)
    done = wait_settled(services, web, film)
    assert done["status"] == "done", done
    assert done["bytes_sent"] == done["total_bytes"] == len(mp4)
    assert done["url"] == f"https://youtu.be/{done['video_id']}" and done["captions_uploaded"] is True
    assert done["error"] is None

    video = youtube_api.videos[done["video_id"]]
    assert video.data == mp4
    assert video.metadata["snippet"] == {
        "title": "Lighthouse",
        "description": "Made with Studiolo",
        "tags": ["film", "ai"],
        "categoryId": "22",
    }
    assert video.metadata["status"] == {"privacyStatus": "unlisted", "selfDeclaredMadeForKids": False}
    chunks = -(-len(mp4) // CHUNK_UNIT)
    assert youtube_api.chunk_puts == chunks and youtube_api.put_body_bytes == len(mp4)  # nothing sent twice
    (caption,) = youtube_api.captions
    assert caption.snippet["videoId"] == done["video_id"]
    assert (caption.snippet["language"], caption.snippet["name"]) == ("en", "Studiolo")
    assert caption.data == SRT.encode()
    with services.db.session() as session:
        row = session.scalars(select(FilmPublication)).one()
        assert row.session_url is None and row.media_key.endswith("/film.mp4")


def test_a_connection_cut_mid_chunk_goes_on_from_the_servers_range(
    services: Services, web: TestClient, youtube_api: YouTubeServer, mp4: bytes
) -> None:
    connect(web)
    film = make_film(services, mp4=mp4)
    kept = 100_000
    youtube_api.cut_put = {2: kept}  # the second chunk: 100,000 bytes arrive, then the connection dies
    youtube_api.fail_put = {4: 503}  # and a later chunk meets a 503
    assert web.post(f"/api/v1/films/{film}/youtube", json={"privacy": "private"}).status_code == 202
    done = wait_settled(services, web, film)
    assert done["status"] == "done", done
    assert done["title"] == "The Lighthouse"  # the film's title by default
    assert youtube_api.videos[done["video_id"]].data == mp4
    # Re-sent: the part of chunk 2 that did not arrive, and the whole chunk the 503 refused; nothing else.
    assert youtube_api.put_body_bytes - len(mp4) == (CHUNK_UNIT - kept) + CHUNK_UNIT
    queries = [r for r in youtube_api.requests if r[2] == f"bytes */{len(mp4)}"]
    assert len(queries) == 2
    # after the cut, the next chunk starts at the first byte the server did not have
    resent = f"bytes {CHUNK_UNIT + kept}-{2 * CHUNK_UNIT + kept - 1}/{len(mp4)}"
    assert ("PUT", "/upload/youtube/v3/videos", resent) in youtube_api.requests
    assert len(youtube_api.sessions) == 1


def test_a_failed_upload_survives_a_restart_and_resumes_where_youtube_got(
    make_services: Callable[[], Services], youtube_api: YouTubeServer, mp4: bytes
) -> None:
    first = make_services()
    first.youtube.max_retries = 1
    youtube_api.fail_put = {2: 503, 3: 503}  # YouTube down for longer than the retries
    with browser(first) as web:
        connect(web)
        film = make_film(first, mp4=mp4)
        publication = web.post(f"/api/v1/films/{film}/youtube", json={}).json()
        failed = wait_settled(first, web, film)
    assert failed["status"] == "failed" and failed["error"]["code"] == "youtube_unavailable"
    assert failed["bytes_sent"] == CHUNK_UNIT
    with first.db.session() as session:
        assert session.get_one(FilmPublication, publication["id"]).session_url
    first.close()

    second = make_services()  # the server restarted
    with browser(second) as web:
        resumed = web.post(f"/api/v1/films/{film}/youtube/{publication['id']}/resume")
        assert resumed.status_code == 202, resumed.text
        done = wait_settled(second, web, film)
        assert done["status"] == "done", done
        again = web.post(f"/api/v1/films/{film}/youtube/{publication['id']}/resume")
        assert again.status_code == 409 and error(again)["code"] == "already_published"
    assert youtube_api.videos[done["video_id"]].data == mp4
    assert len(youtube_api.sessions) == 1  # the same session went on
    assert youtube_api.put_body_bytes - len(mp4) == 2 * CHUNK_UNIT  # only the two refused chunks again


def test_an_upload_left_by_a_stopped_process_is_picked_up_at_start(
    make_services: Callable[[], Services], youtube_api: YouTubeServer, mp4: bytes
) -> None:
    first = make_services()
    first.youtube.max_retries = 0
    youtube_api.cut_put = {3: 0}
    with browser(first) as web:
        connect(web)
        film = make_film(first, mp4=mp4)
        publication = web.post(f"/api/v1/films/{film}/youtube", json={}).json()
        wait_settled(first, web, film)
    first.close()
    # As a crash leaves it: still "uploading", its heartbeat old.
    with first.db.session() as session:
        session.execute(
            update(FilmPublication)
            .where(FilmPublication.id == publication["id"])
            .values(status="uploading", error_code=None, updated_at=utcnow() - timedelta(minutes=5))
        )
    second = make_services()
    with browser(second) as web:  # its start-up sweep takes the upload back
        done = wait_settled(second, web, film)
    assert done["status"] == "done", done
    assert youtube_api.videos[done["video_id"]].data == mp4 and len(youtube_api.sessions) == 1


def test_a_shutdown_mid_upload_hands_it_to_the_next_start(
    make_services: Callable[[], Services], youtube_api: YouTubeServer, mp4: bytes
) -> None:
    first = make_services()
    first.youtube.backoff_seconds = 30.0  # the 503 below leaves the upload waiting to retry when the server stops
    youtube_api.fail_put = {2: 503}
    with browser(first) as web:
        connect(web)
        film = make_film(first, mp4=mp4)
        publication = web.post(f"/api/v1/films/{film}/youtube", json={}).json()
        deadline = time.monotonic() + 30
        while youtube_api.chunk_puts < 2:
            assert time.monotonic() < deadline, "the upload never reached its second chunk"
            time.sleep(0.02)
    first.close()  # stops the upload thread in its backoff
    with first.db.session() as session:
        row = session.get_one(FilmPublication, publication["id"])
        assert (row.status, row.bytes_sent, row.error_code) == ("uploading", CHUNK_UNIT, None)
    second = make_services()
    with browser(second) as web:
        done = wait_settled(second, web, film)
    assert done["status"] == "done", done
    assert youtube_api.videos[done["video_id"]].data == mp4 and len(youtube_api.sessions) == 1


def test_a_second_publish_while_one_uploads_is_409(
    services: Services, web: TestClient, youtube_api: YouTubeServer, mp4: bytes
) -> None:
    services.youtube.backoff_seconds = 30.0  # the first upload waits after its 503 while we click again
    youtube_api.fail_put = {1: 503}
    connect(web)
    film = make_film(services, mp4=mp4)
    first = web.post(f"/api/v1/films/{film}/youtube", json={}).json()
    deadline = time.monotonic() + 30
    while youtube_api.chunk_puts < 1:
        assert time.monotonic() < deadline, "the upload never sent its first chunk"
        time.sleep(0.02)
    twice = web.post(f"/api/v1/films/{film}/youtube", json={})
    assert twice.status_code == 409 and error(twice)["code"] == "upload_in_progress"
    assert error(twice)["details"] == {"publication": first["id"]}
    resume = web.post(f"/api/v1/films/{film}/youtube/{first['id']}/resume")
    assert resume.status_code == 409 and error(resume)["code"] == "upload_in_progress"
    assert len(youtube_api.sessions) == 1


def test_an_expired_access_token_is_refreshed_once(
    services: Services, web: TestClient, idp: LocalProvider, youtube_api: YouTubeServer, mp4: bytes
) -> None:
    connect(web)
    before = services.youtube.google.tokens(LOCAL_USER_ID)
    idp.expire_access_tokens()  # Google forgot it: the next API call is a 401
    film = make_film(services, mp4=mp4)
    assert web.post(f"/api/v1/films/{film}/youtube", json={}).status_code == 202
    done = wait_settled(services, web, film)
    assert done["status"] == "done", done
    assert youtube_api.unauthorized == 1
    assert [r["grant_type"] for r in idp.token_requests] == ["authorization_code", "refresh_token"]
    after = services.youtube.google.tokens(LOCAL_USER_ID)
    assert before is not None and after is not None
    assert after.access != before.access and after.refresh == before.refresh


def test_a_revoked_connection_fails_the_upload_with_a_clear_code(
    services: Services, web: TestClient, idp: LocalProvider, mp4: bytes
) -> None:
    connect(web)
    idp.expire_access_tokens()
    idp.refresh_tokens.clear()  # the user removed the app's access in their Google account
    film = make_film(services, mp4=mp4)
    assert web.post(f"/api/v1/films/{film}/youtube", json={}).status_code == 202
    failed = wait_settled(services, web, film)
    assert failed["status"] == "failed" and failed["error"]["code"] == "youtube_not_connected"


# --- refusals ---------------------------------------------------------------------------------------------
def test_publishing_without_a_connection_is_409_with_the_connect_url(
    services: Services, web: TestClient, mp4: bytes
) -> None:
    film = make_film(services, mp4=mp4)
    r = web.post(f"/api/v1/films/{film}/youtube", json={"privacy": "public"})
    assert r.status_code == 409
    assert error(r)["code"] == "youtube_not_connected"
    assert error(r)["details"] == {"connect_url": CONNECT}
    assert web.get(f"/api/v1/films/{film}/youtube").json() == []


def test_publishing_a_film_never_rendered_is_409(services: Services, web: TestClient) -> None:
    connect(web)
    film = make_film(services)
    r = web.post(f"/api/v1/films/{film}/youtube", json={})
    assert r.status_code == 409 and error(r)["code"] == "no_render"
    with services.db.session() as session:  # the render's MP4 is named but no longer in the store
        session.get_one(FilmProject, film).outputs = {"mp4": f"films/{LOCAL_USER_ID}/{film}/film.mp4"}
    r = web.post(f"/api/v1/films/{film}/youtube", json={})
    assert r.status_code == 409 and error(r)["code"] == "no_render"
    assert web.get(f"/api/v1/films/{film}/youtube").json() == []


def test_another_users_film_is_not_found(services: Services, web: TestClient, mp4: bytes) -> None:
    connect(web)
    stranger = create_user(services, "stranger@example.com")
    theirs = make_film(services, stranger, mp4=mp4)
    r = web.post(f"/api/v1/films/{theirs}/youtube", json={})
    assert r.status_code == 404 and error(r)["code"] == "film_not_found"
    assert error(web.get(f"/api/v1/films/{theirs}/youtube"))["code"] == "film_not_found"
    with services.db.session() as session:
        assert session.scalars(select(FilmPublication)).first() is None


def test_bad_publish_requests_are_422(services: Services, web: TestClient, mp4: bytes) -> None:
    connect(web)
    film = make_film(services, mp4=mp4)
    for body in ({"privacy": "secret"}, {"title": "<b>bold</b>"}, {"title": "x" * 101}, {"tags": ["t" * 101]}):
        assert web.post(f"/api/v1/films/{film}/youtube", json=body).status_code == 422, body
