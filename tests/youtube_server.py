"""A small YouTube Data API v3 for tests: the resumable video upload and the multipart caption upload.

Real HTTP (uvicorn on 127.0.0.1, a free port, a background thread), the protocol as Google documents it:

- ``POST /upload/youtube/v3/videos?uploadType=resumable&part=snippet,status`` with the JSON metadata and the
  ``X-Upload-Content-Type`` / ``X-Upload-Content-Length`` headers opens a session; its URI is in ``Location``.
- ``PUT <session>`` with ``Content-Range: bytes a-b/total``: ``a`` must be the next byte the session expects, every
  chunk but the last a multiple of 256 KiB, the body exactly ``b - a + 1`` bytes. 308 Resume Incomplete with
  ``Range: bytes=0-N`` while incomplete, 200 with the video resource when the last byte arrived.
  ``Content-Range: bytes */total`` asks for the state (308 + Range, or 200 when complete).
- ``POST /upload/youtube/v3/captions?uploadType=multipart&part=snippet``: multipart/related, the JSON snippet
  (videoId, language, name) then the caption file.

Bearer tokens are checked by ``check_token`` (the local OIDC provider's ``token_scopes``): an unknown or expired
token is a 401; a token without ``youtube.upload`` (videos) or ``youtube.force-ssl`` (captions) is a 403.

Faults, for the resume tests, by the ordinal of a chunk PUT (1 = the first chunk PUT the server receives):
``fail_put = {k: status}`` (that PUT is answered ``status``, e.g. 503, and nothing of its body is kept),
``cut_put = {k: n}`` (that PUT keeps its first n bytes, then the connection is cut without an answer),
``status_fail = k`` (the next k status queries answer 503 too).
Counters: ``chunk_puts``, ``put_body_bytes`` (every body byte received by chunk PUTs, so the bytes sent twice are
``put_body_bytes - size``), ``unauthorized`` (401s answered), ``requests`` (method, path, Content-Range).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.threaded_server import ThreadedServer

UPLOAD_SCOPE = "https://www.googleapis.com/auth/youtube.upload"
CAPTIONS_SCOPE = "https://www.googleapis.com/auth/youtube.force-ssl"
CHUNK_UNIT = 256 * 1024
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_QUERY = re.compile(r"^bytes \*/(\d+)$")


@dataclass
class UploadSession:
    metadata: dict[str, Any]
    content_type: str
    total: int
    owner_token: str
    data: bytearray = field(default_factory=bytearray)
    video_id: str | None = None


@dataclass
class Video:
    id: str
    metadata: dict[str, Any]
    data: bytes


@dataclass
class Caption:
    id: str
    snippet: dict[str, Any]
    data: bytes


class _CutConnection(Response):
    """Starts an answer and dies before finishing it: the client sees the connection close mid-response."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ConnectionAbortedError("test server: connection cut on purpose")


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}},
        status_code=status,
    )


class YouTubeServer:
    def __init__(self, check_token: Callable[[str], set[str] | None]) -> None:
        self.check_token = check_token
        self._lock = threading.Lock()
        self.url = ""
        self.sessions: dict[str, UploadSession] = {}
        self.videos: dict[str, Video] = {}
        self.captions: list[Caption] = []
        self.requests: list[tuple[str, str, str]] = []
        self.put_body_bytes = 0
        self.chunk_puts = 0
        self.fail_put: dict[int, int] = {}
        self.cut_put: dict[int, int] = {}
        self.status_fail = 0
        self.unauthorized = 0
        self._http = ThreadedServer(self._app(), "test YouTube API")

    def start(self) -> None:
        self.url = self._http.start()

    def stop(self) -> None:
        self._http.stop()

    def reset(self) -> None:
        with self._lock:
            self.sessions.clear()
            self.videos.clear()
            self.captions.clear()
            self.requests.clear()
            self.put_body_bytes = 0
            self.chunk_puts = 0
            self.fail_put.clear()
            self.cut_put.clear()
            self.status_fail = 0
            self.unauthorized = 0

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/upload/youtube/v3/videos", self._videos, methods=["POST", "PUT"]),
                Route("/upload/youtube/v3/captions", self._captions, methods=["POST"]),
            ]
        )

    def _auth(self, request: Request, scope: str) -> tuple[str, Response | None]:
        kind, _, token = request.headers.get("authorization", "").partition(" ")
        scopes = self.check_token(token) if kind.lower() == "bearer" and token else None
        if scopes is None:
            with self._lock:
                self.unauthorized += 1
            return token, _error(401, "authError", "Invalid Credentials")
        if scope not in scopes:
            return token, _error(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
        return token, None

    async def _videos(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.method, request.url.path, request.headers.get("content-range", "")))
        if request.method == "POST":
            return await self._open(request)
        return await self._put(request)

    async def _open(self, request: Request) -> Response:
        token, refused = self._auth(request, UPLOAD_SCOPE)
        if refused is not None:
            return refused
        q = request.query_params
        if q.get("uploadType") != "resumable" or set(q.get("part", "").split(",")) != {"snippet", "status"}:
            return _error(400, "badRequest", "uploadType=resumable and part=snippet,status expected")
        length = request.headers.get("x-upload-content-length", "")
        content_type = request.headers.get("x-upload-content-type", "")
        if not length.isdigit() or int(length) <= 0 or not content_type.startswith("video/"):
            return _error(400, "badRequest", "X-Upload-Content-Length and X-Upload-Content-Type video/* required")
        try:
            metadata = json.loads(await request.body())
        except ValueError:
            return _error(400, "parseError", "metadata is not JSON")
        snippet, status = metadata.get("snippet", {}), metadata.get("status", {})
        if not snippet.get("title") or status.get("privacyStatus") not in ("private", "unlisted", "public"):
            return _error(400, "invalidTitle", "snippet.title and status.privacyStatus required")
        upload_id = secrets.token_urlsafe(16)
        with self._lock:
            self.sessions[upload_id] = UploadSession(metadata, content_type, int(length), token)
        location = f"{self.url}/upload/youtube/v3/videos?uploadType=resumable&upload_id={upload_id}"
        return Response(status_code=200, headers={"Location": location})

    def _progress(self, session: UploadSession) -> Response:
        if session.video_id is not None:
            video = self.videos[session.video_id]
            return JSONResponse({"kind": "youtube#video", "id": video.id, **video.metadata}, status_code=200)
        headers = {"Range": f"bytes=0-{len(session.data) - 1}"} if session.data else {}
        return Response(status_code=308, headers=headers)

    async def _put(self, request: Request) -> Response:
        _, refused = self._auth(request, UPLOAD_SCOPE)
        if refused is not None:
            await request.body()
            return refused
        with self._lock:
            session = self.sessions.get(request.query_params.get("upload_id", ""))
        if session is None:
            return _error(404, "notFound", "no such upload session")
        content_range = request.headers.get("content-range", "")
        if query := _QUERY.match(content_range):
            if int(query.group(1)) != session.total:
                return _error(400, "badRequest", "total differs from the session's")
            with self._lock:
                if self.status_fail > 0:
                    self.status_fail -= 1
                    return _error(503, "backendError", "try again")
            return self._progress(session)
        match = _RANGE.match(content_range)
        body = await request.body()
        with self._lock:
            self.put_body_bytes += len(body)
            self.chunk_puts += 1
            ordinal = self.chunk_puts
        if match is None:
            return _error(400, "badRequest", f"Content-Range {content_range!r}")
        start, end, total = (int(g) for g in match.groups())
        with self._lock:
            if ordinal in self.fail_put:
                return _error(self.fail_put[ordinal], "backendError", "try again")
            cut = self.cut_put.get(ordinal)
        if total != session.total or end >= total or start > end:
            return _error(400, "badRequest", "Content-Range does not fit the session")
        if start != len(session.data):
            return _error(400, "badRequest", f"expected the chunk at {len(session.data)}, got {start}")
        if len(body) != end - start + 1:
            return _error(400, "badRequest", "body length differs from Content-Range")
        if end + 1 < total and len(body) % CHUNK_UNIT:
            return _error(400, "badRequest", "chunks must be multiples of 256 KiB")
        if cut is not None:
            with self._lock:
                session.data.extend(body[:cut])
            return _CutConnection()
        with self._lock:
            session.data.extend(body)
            if len(session.data) == total and session.video_id is None:
                video_id = secrets.token_urlsafe(8).replace("-", "x").replace("_", "y")[:11]
                video = Video(video_id, session.metadata, bytes(session.data))
                self.videos[video.id] = video
                session.video_id = video.id
        return self._progress(session)

    async def _captions(self, request: Request) -> Response:
        _, refused = self._auth(request, CAPTIONS_SCOPE)
        if refused is not None:
            return refused
        q = request.query_params
        if q.get("uploadType") != "multipart" or q.get("part") != "snippet":
            return _error(400, "badRequest", "uploadType=multipart and part=snippet expected")
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/related"):
            return _error(400, "badRequest", "multipart/related expected")
        raw = f"Content-Type: {content_type}\r\n\r\n".encode() + await request.body()
        message = BytesParser(policy=HTTP).parsebytes(raw)
        parts = list(message.iter_parts()) if message.is_multipart() else []
        if len(parts) != 2:
            return _error(400, "badRequest", "two parts expected: the snippet and the caption file")
        try:
            resource = json.loads(parts[0].get_payload(decode=True))
        except ValueError:
            return _error(400, "parseError", "the first part is not JSON")
        snippet = resource.get("snippet", {}) if isinstance(resource, dict) else {}
        if snippet.get("videoId") not in self.videos:
            return _error(404, "videoNotFound", "no such video")
        if not snippet.get("language") or not snippet.get("name"):
            return _error(400, "invalidMetadata", "language and name required")
        caption = Caption(secrets.token_urlsafe(8), snippet, parts[1].get_payload(decode=True))
        with self._lock:
            self.captions.append(caption)
        return JSONResponse({"kind": "youtube#caption", "id": caption.id, "snippet": snippet})
