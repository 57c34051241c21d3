"""One attempt at uploading one publication to YouTube, in its own thread (youtube.py runs it).

The YouTube Data API v3 resumable protocol: a POST with the video's metadata opens a session (its URI comes back in
``Location``), PUTs send the file in chunks (multiples of 256 KiB, ``Content-Range: bytes a-b/total``), a 308
answer's ``Range`` says what arrived; after an error, ``Content-Range: bytes */total`` asks the server how far it got.
5xx answers and network errors are retried with exponential backoff; a 401 refreshes the access token once. Then
the film's SRT goes up as an English caption track (captions.insert, multipart).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from studiolo.domain.film.youtube_google import UploadError
from studiolo.storage.base import ObjectStore

if TYPE_CHECKING:
    from studiolo.domain.film.youtube import YouTubeService

log = logging.getLogger(__name__)

_HEARTBEAT_SECONDS = 5.0


class Stopped(Exception):
    """The service is closing: the row is left as it is, for the next process to go on with."""


def parse_range(header: str | None) -> int:
    """The next byte to send after a 308: ``Range: bytes=0-N`` -> N + 1; no header -> 0 (nothing arrived)."""
    if not header or not header.startswith("bytes=0-"):
        return 0
    try:
        return int(header[len("bytes=0-") :]) + 1
    except ValueError:
        return 0


def _google_error(response: httpx.Response) -> tuple[str, str]:
    """The reason and message of a Google API error body, as far as it has them."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        errors = error.get("errors")
        reason = ""
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            reason = str(errors[0].get("reason", ""))
        return reason, str(error.get("message", ""))[:500]
    if isinstance(error, str):
        return error, str(body.get("error_description", ""))[:500]
    return "", response.text[:300]


class Media:
    """The MP4 being uploaded: read by ranges from the store's file, or from memory for remote stores."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        self._store = store
        self._key = key
        self._file: Any = None
        self._data: bytes | None = None
        self.size = 0

    def __enter__(self) -> Media:
        path: Path | None = self._store.local_path(self._key)
        if path is not None and path.exists():
            self._file = path.open("rb")
            self.size = path.stat().st_size
        else:
            if not self._store.exists(self._key):
                raise UploadError(
                    "no_render", "The film's rendered video is missing; render it again.", retryable=False
                )
            self._data = self._store.get(self._key)
            self.size = len(self._data)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def pieces(self, start: int, end: int, piece: int = 64 * 1024) -> Iterator[bytes]:
        """Bytes [start, end) in pieces."""
        position = start
        while position < end:
            size = min(piece, end - position)
            if self._data is not None:
                chunk = self._data[position : position + size]
            else:
                self._file.seek(position)
                chunk = self._file.read(size)
            if not chunk:
                raise UploadError("youtube_upload_failed", "The video file changed while uploading.", retryable=False)
            position += len(chunk)
            yield chunk


class Uploader:
    """One upload attempt of one publication, in its thread."""

    def __init__(self, service: YouTubeService, publication_id: str, owner_id: str) -> None:
        self.service = service
        self.publication_id = publication_id
        self.owner_id = owner_id
        self.api = service.settings.film_youtube_api_base.rstrip("/")
        self._token: str | None = None
        self._last_beat = time.monotonic()

    # --- plumbing -----------------------------------------------------------------------------------------
    def _auth(self, *, refresh: bool = False) -> dict[str, str]:
        if refresh or self._token is None:
            self._token = self.service.google.access_token(self.owner_id, force_refresh=refresh)
        return {"Authorization": f"Bearer {self._token}"}

    def _beat(self, **values: Any) -> None:
        self.service._save(self.publication_id, **values)
        self._last_beat = time.monotonic()

    def _sleep(self, attempt: int) -> None:
        """Backoff before retry ``attempt`` (1, 2, ...), capped at 30 s (well inside the lease), with jitter; stops
        at shutdown."""
        delay = min(30.0, self.service.backoff_seconds * (2 ** (attempt - 1))) * (0.75 + secrets.randbelow(500) / 1000)
        if self.service._stop.wait(delay):
            raise Stopped
        self._beat()

    def _check_stop(self) -> None:
        if self.service._stop.is_set():
            raise Stopped

    def _request(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request with a 401 answered by one token refresh, 5xx and network errors retried with backoff."""
        refreshed = False
        failures = 0
        while True:
            self._check_stop()
            headers = {**kwargs.pop("headers", {}), **self._auth()}
            try:
                response = client.request(method, url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                failures += 1
                if failures > self.service.max_retries:
                    raise UploadError("youtube_unavailable", f"YouTube could not be reached: {exc!r}"[:500]) from exc
                self._sleep(failures)
                kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._auth(refresh=True)
                continue
            if response.status_code >= 500:
                failures += 1
                if failures > self.service.max_retries:
                    raise UploadError("youtube_unavailable", f"YouTube answered {response.status_code} repeatedly.")
                self._sleep(failures)
                continue
            return response

    def _refused(self, response: httpx.Response, what: str) -> UploadError:
        reason, message = _google_error(response)
        if response.status_code == 401:
            return UploadError(
                "youtube_not_connected", "YouTube refused the connection; connect again.", retryable=False
            )
        code = "youtube_quota_exceeded" if reason in ("quotaExceeded", "uploadLimitExceeded") else "youtube_rejected"
        text = f"YouTube refused the {what} ({response.status_code}{', ' + reason if reason else ''}): {message}"
        return UploadError(code, text.strip()[:1000], retryable=code == "youtube_quota_exceeded")

    # --- the video ----------------------------------------------------------------------------------------
    def _open_session(self, client: httpx.Client, metadata: dict[str, Any], total: int) -> str:
        response = self._request(
            client,
            "POST",
            f"{self.api}/upload/youtube/v3/videos",
            params={"uploadType": "resumable", "part": "snippet,status"},
            json=metadata,
            headers={"X-Upload-Content-Type": "video/mp4", "X-Upload-Content-Length": str(total)},
        )
        location = response.headers.get("location")
        if response.status_code != 200 or not location:
            raise self._refused(response, "upload")
        self._beat(session_url=location, bytes_sent=0, total_bytes=total)
        return str(location)

    def _status(self, client: httpx.Client, session_url: str, total: int) -> tuple[int, str | None] | None:
        """What the session holds: (next byte, None), (total, video id) when complete, None when it is gone."""
        response = self._request(
            client, "PUT", session_url, headers={"Content-Range": f"bytes */{total}", "Content-Length": "0"}
        )
        if response.status_code == 308:
            return parse_range(response.headers.get("range")), None
        if response.status_code in (200, 201):
            return total, self._video_id(response)
        if response.status_code in (404, 410):
            return None
        raise self._refused(response, "upload")

    def _video_id(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise UploadError("youtube_upload_failed", "YouTube finished the upload without a video id.")
        return str(body["id"])

    def upload_video(self, media: Media, metadata: dict[str, Any], session_url: str | None) -> str:
        total = media.size
        with self.service.google.http(timeout=max(60.0, self.service.settings.hub_timeout_seconds)) as client:
            offset = 0
            if session_url:
                known = self._status(client, session_url, total)
                if known is None:
                    session_url = None  # expired (a week old) or unknown: a new session from the start
                else:
                    offset, video_id = known
                    if video_id is not None:
                        self._beat(bytes_sent=total)
                        return video_id
            if not session_url:
                session_url = self._open_session(client, metadata, total)
            self._beat(bytes_sent=offset, total_bytes=total)
            failures = 0
            refreshed = False
            while True:
                self._check_stop()
                end = min(offset + self.service.chunk_bytes, total)
                try:
                    response = self._put_chunk(client, session_url, media, offset, end, total)
                except httpx.HTTPError as exc:
                    response = None
                    log.info("YouTube chunk upload interrupted (%r); asking the session what arrived", exc)
                if response is not None and response.status_code == 308:
                    offset = parse_range(response.headers.get("range"))
                    failures = 0
                    refreshed = False
                    self._beat(bytes_sent=offset)
                    continue
                if response is not None and response.status_code in (200, 201):
                    self._beat(bytes_sent=total)
                    return self._video_id(response)
                if response is not None and response.status_code == 401 and not refreshed:
                    refreshed = True  # once: a second 401 in a row is refused below
                    self._auth(refresh=True)
                    continue
                if response is not None and response.status_code in (404, 410):
                    session_url = self._open_session(client, metadata, total)
                    offset = 0
                    continue
                if response is not None and response.status_code < 500:
                    raise self._refused(response, "upload")
                failures += 1
                if failures > self.service.max_retries:
                    raise UploadError("youtube_unavailable", "YouTube kept failing; the upload can be resumed.")
                self._sleep(failures)
                known = self._status(client, session_url, total)
                if known is None:
                    session_url = self._open_session(client, metadata, total)
                    offset = 0
                    continue
                offset, video_id = known
                self._beat(bytes_sent=offset)
                if video_id is not None:
                    return video_id

    def _put_chunk(
        self, client: httpx.Client, session_url: str, media: Media, start: int, end: int, total: int
    ) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for piece in media.pieces(start, end):
                if time.monotonic() - self._last_beat > _HEARTBEAT_SECONDS:
                    self._beat()  # a slow chunk must not look like a dead process to the sweeper
                yield piece

        headers = {
            **self._auth(),
            "Content-Type": "video/mp4",
            "Content-Length": str(end - start),
            "Content-Range": f"bytes {start}-{end - 1}/{total}",
        }
        return client.put(session_url, content=body(), headers=headers)

    # --- the captions -------------------------------------------------------------------------------------
    def upload_captions(self, video_id: str, srt: bytes) -> None:
        boundary = "studiolo-" + secrets.token_hex(12)
        snippet = {"snippet": {"videoId": video_id, "language": "en", "name": "Studiolo", "isDraft": False}}
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(snippet).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                srt,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        with self.service.google.http() as client:
            response = self._request(
                client,
                "POST",
                f"{self.api}/upload/youtube/v3/captions",
                params={"uploadType": "multipart", "part": "snippet"},
                content=body,
                headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            )
        if response.status_code not in (200, 201):
            raise self._refused(response, "captions")
