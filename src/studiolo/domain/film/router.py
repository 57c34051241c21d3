"""HTTP routes of the film studio, ``/api/v1/films`` (docs/film.md): projects, their storyboard, characters, quotes,
renders, the Trash, sharing and files. Thin handlers: one FilmService call each.

The MP4 is served with HTTP Range support (Starlette's FileResponse answers ``Range`` with 206), which a browser's
``<video>`` needs to seek; on S3 storage every file is a 307 to a presigned URL. The ``/shared/{token}`` routes are
public and answer only while the film is public (tests/integration/test_film_api.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse
from starlette.datastructures import UploadFile

from studiolo.deps import GenerationLimit, OwnerId, ServicesDep, current_owner_id, multipart_body
from studiolo.domain.film.schemas import (
    FilmCreate,
    FilmOptions,
    FilmPage,
    FilmPatch,
    FilmQuote,
    FilmRenderAccepted,
    FilmView,
    SceneCreate,
    ScenePatch,
    SceneRegenerate,
    SceneReorder,
    SceneSplit,
    SharedFilmView,
    VoiceList,
)
from studiolo.domain.film.service import FilmFile
from studiolo.errors import InvalidInput, UnsupportedMediaType
from studiolo.services import Services

router = APIRouter(prefix="/films", tags=["films"], dependencies=[Depends(current_owner_id)])
# Anyone with a share link: no credentials (the film's token is the credential, and only while it is public).
public_router = APIRouter(prefix="/films/shared", tags=["films"])

Limit = Annotated[int, Query(ge=1, le=100, description="Films per page")]
Cursor = Annotated[str | None, Query(max_length=64, description="The `next_cursor` of the previous page")]
FilmId = Annotated[str, Path(max_length=64, description="The film's id")]
SceneId = Annotated[str, Path(max_length=64, description="The scene's id")]
FileName = Annotated[str, Path(max_length=64, description="film.mp4, film.srt, film.vtt or thumbnail.jpg")]

_CHARACTER_BODY = multipart_body(
    ["name", "image"],
    {
        "name": {"type": "string", "maxLength": 80, "description": "As the script names them"},
        "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP or GIF"},
    },
)
_FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"video/mp4": {}, "application/x-subrip": {}, "text/vtt": {}, "image/jpeg": {}}},
    206: {"description": "A byte range of the file (a Range request: a video player seeking)"},
    307: {"description": "The file's presigned URL, when the object store has them (S3 storage)"},
}


def _serve(services: Services, f: FilmFile, request: Request, *, download: bool) -> Response:
    disposition = "attachment" if download else "inline"
    headers = {
        "Cache-Control": "private, no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{disposition}; filename="{f.filename}"',
    }
    if f.url is not None:
        return RedirectResponse(f.url, status_code=307, headers={"Cache-Control": "private, no-store"})
    if f.local_path is not None and f.local_path.exists():
        # FileResponse answers Range requests itself (206 Partial Content, Accept-Ranges: bytes).
        return FileResponse(f.local_path, media_type=f.content_type, headers=headers)
    return Response(services.film.read(f.key), media_type=f.content_type, headers=headers)


# --- catalogue -----------------------------------------------------------------------------------------------------
@router.get("/voices", response_model=VoiceList, summary="The narration voices installed here")
def list_voices(services: ServicesDep) -> VoiceList:
    """Every voice of the speech engines this server has (espeak-ng always, Piper voices when installed, hosted
    voices when configured), sorted by language and name, and the default voice."""
    return services.film.voices()


@router.get(
    "/voices/{voice_id}/sample",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}},
    summary="Hear a voice: a WAV of it speaking a sentence",
)
def voice_sample(
    voice_id: Annotated[str, Path(max_length=120)],
    services: ServicesDep,
    text: Annotated[str | None, Query(max_length=300, description="What to say; default: a sentence")] = None,
) -> Response:
    """A short WAV of the voice (cached). 422 ``unknown_voice``, ``unsupported_language`` for text the voice cannot
    speak."""
    data = services.film.voice_sample(voice_id, text)
    return Response(data, media_type="audio/wav", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/options", response_model=FilmOptions, summary="What a film may be: moods, aspects, resolutions, styles")
def film_options(services: ServicesDep, owner: OwnerId) -> FilmOptions:
    """The music moods, aspects, resolutions, your styles and the built-in ones, the word limit of a script and the
    range of target durations, for the new-film form."""
    return services.film.options(owner)


# --- projects ------------------------------------------------------------------------------------------------------
@router.post("", response_model=FilmView, status_code=201, summary="Create a film: the script split into scenes")
def create_film(data: FilmCreate, services: ServicesDep, owner: OwnerId) -> FilmView:
    """A draft film with its storyboard (the script split into scenes of about 4-8 s toward ``target_seconds``) and a
    gallery collection "Film: <title>" for its images. 422 ``empty_script``, ``script_too_long``, ``unknown_voice``,
    ``unsupported_language``, ``unknown_music``, ``unknown_style``; 503 ``no_voices`` when no speech engine is
    installed."""
    return services.film.create(owner, data)


@router.get("", response_model=FilmPage, summary="Your films, newest first")
def list_films(
    services: ServicesDep,
    owner: OwnerId,
    limit: Limit = 50,
    cursor: Cursor = None,
    trashed: Annotated[bool, Query(description="List your films in the Trash instead")] = False,
) -> FilmPage:
    """Each with its status, scene count, planned seconds and, once rendered, its duration and thumbnail."""
    return services.film.list(owner, limit=limit, cursor=cursor, trashed=trashed)


@router.get("/{film_id}", response_model=FilmView, summary="One of your films, with its scenes and render progress")
def get_film(film_id: FilmId, services: ServicesDep, owner: OwnerId) -> FilmView:
    """The film, its storyboard (each scene's image and its state), characters, the render's stages and outputs."""
    return services.film.get(owner, film_id)


@router.patch("/{film_id}", response_model=FilmView, summary="Change a film's settings, script or sharing")
def update_film(film_id: FilmId, patch: FilmPatch, services: ServicesDep, owner: OwnerId) -> FilmView:
    """Only the fields given change. ``resplit: true`` makes the storyboard again from the script (scene edits are
    lost); ``public`` turns the share link on or off."""
    return services.film.update(owner, film_id, patch)


@router.delete("/{film_id}", status_code=204, summary="Move a film to the Trash")
def delete_film(film_id: FilmId, services: ServicesDep, owner: OwnerId) -> Response:
    """Out of your list (``?trashed=true`` lists it), restorable; a render in progress is canceled."""
    services.film.delete(owner, film_id)
    return Response(status_code=204)


@router.post("/{film_id}/restore", response_model=FilmView, summary="Bring a film back from the Trash")
def restore_film(film_id: FilmId, services: ServicesDep, owner: OwnerId) -> FilmView:
    return services.film.restore(owner, film_id)


@router.delete("/{film_id}/purge", status_code=204, summary="Delete a film in the Trash for good")
def purge_film(film_id: FilmId, services: ServicesDep, owner: OwnerId) -> Response:
    """Its scenes, characters, rendered files and cached stages go; its scene images stay in your gallery. 409
    ``film_not_in_trash`` for a film not in the Trash."""
    services.film.purge(owner, film_id)
    return Response(status_code=204)


# --- storyboard ----------------------------------------------------------------------------------------------------
@router.post("/{film_id}/scenes", response_model=FilmView, status_code=201, summary="Add a scene")
def add_scene(film_id: FilmId, data: SceneCreate, services: ServicesDep, owner: OwnerId) -> FilmView:
    """After the scene ``after`` (null: as the first scene), with a new random seed; its prompt from its text unless
    given. 409 ``too_many_scenes`` past 60."""
    return services.film.add_scene(owner, film_id, data)


@router.post("/{film_id}/scenes/reorder", response_model=FilmView, summary="Put the scenes in a new order")
def reorder_scenes(film_id: FilmId, data: SceneReorder, services: ServicesDep, owner: OwnerId) -> FilmView:
    """``scene_ids`` lists every scene of the film once (422 ``invalid_scene_order`` otherwise)."""
    return services.film.reorder_scenes(owner, film_id, data.scene_ids)


@router.patch("/{film_id}/scenes/{scene_id}", response_model=FilmView, summary="Edit a scene's text, prompt or seed")
def update_scene(
    film_id: FilmId, scene_id: SceneId, patch: ScenePatch, services: ServicesDep, owner: OwnerId
) -> FilmView:
    """A new prompt or seed makes its image stale (the next render makes it again, and the quote counts it)."""
    return services.film.update_scene(owner, film_id, scene_id, patch)


@router.delete("/{film_id}/scenes/{scene_id}", response_model=FilmView, summary="Delete a scene")
def delete_scene(film_id: FilmId, scene_id: SceneId, services: ServicesDep, owner: OwnerId) -> FilmView:
    """409 ``last_scene``: a film keeps at least one."""
    return services.film.delete_scene(owner, film_id, scene_id)


@router.post("/{film_id}/scenes/{scene_id}/split", response_model=FilmView, summary="Split a scene in two")
def split_scene(
    film_id: FilmId, scene_id: SceneId, data: SceneSplit, services: ServicesDep, owner: OwnerId
) -> FilmView:
    """The new scene starts at sentence ``sentence`` (0-based, at least 1) of the scene's text."""
    return services.film.split_scene(owner, film_id, scene_id, data)


@router.post("/{film_id}/scenes/{scene_id}/merge", response_model=FilmView, summary="Merge a scene with the next")
def merge_scene(film_id: FilmId, scene_id: SceneId, services: ServicesDep, owner: OwnerId) -> FilmView:
    """The texts and prompts are joined; the scene keeps its seed. 409 ``no_next_scene`` for the last scene."""
    return services.film.merge_scene(owner, film_id, scene_id)


@router.post(
    "/{film_id}/scenes/{scene_id}/regenerate",
    response_model=FilmView,
    status_code=202,
    summary="Make a scene's image again now",
    dependencies=[GenerationLimit],
)
def regenerate_scene(
    film_id: FilmId, scene_id: SceneId, services: ServicesDep, owner: OwnerId, data: SceneRegenerate | None = None
) -> FilmView:
    """Queues the scene's image job (charged as an image) with the seed given (null: a new random one) and the
    prompt if given; the scene shows ``image_state`` queued, then ready."""
    return services.film.regenerate_scene(owner, film_id, scene_id, data or SceneRegenerate())


# --- characters ----------------------------------------------------------------------------------------------------
@router.post(
    "/{film_id}/characters",
    response_model=FilmView,
    status_code=201,
    openapi_extra=_CHARACTER_BODY,
    summary="Add a character image (multipart: name, image)",
)
async def add_character(film_id: FilmId, request: Request, services: ServicesDep, owner: OwnerId) -> FilmView:
    """Scenes whose text names the character start their image from it (img2img). The upload is checked as the
    gallery's are: 415 ``unsupported_media_type``, 413 ``image_too_large`` / ``upload_too_large``, 422
    ``image_corrupt``; 409 ``character_exists`` for a name the film has."""
    await run_in_threadpool(services.film.require, owner, film_id)  # 404 before anything about the body
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send multipart/form-data with 'name' and 'image' fields.", code="unsupported_content_type"
        )
    form = await request.form()
    name, upload = form.get("name"), form.get("image")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Give the character's name.", code="invalid_name", details={"field": "name"})
    if not isinstance(upload, UploadFile):
        raise InvalidInput("Send the picture as the 'image' upload.", code="invalid_upload", details={"field": "image"})
    data = await upload.read()
    return await run_in_threadpool(services.film.add_character, owner, film_id, name, data)


@router.delete("/{film_id}/characters/{character_id}", response_model=FilmView, summary="Remove a character")
def delete_character(
    film_id: FilmId,
    character_id: Annotated[str, Path(max_length=64)],
    services: ServicesDep,
    owner: OwnerId,
) -> FilmView:
    return services.film.delete_character(owner, film_id, character_id)


@router.get(
    "/{film_id}/characters/{character_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    summary="A character's image",
)
def character_image(
    film_id: FilmId,
    character_id: Annotated[str, Path(max_length=64)],
    services: ServicesDep,
    owner: OwnerId,
) -> Response:
    data = services.film.character_image(owner, film_id, character_id)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-cache"})


# --- render --------------------------------------------------------------------------------------------------------
@router.get("/{film_id}/quote", response_model=FilmQuote, summary="What rendering the film would cost now")
def quote_film(film_id: FilmId, services: ServicesDep, owner: OwnerId) -> FilmQuote:
    """Credits of the scene images to make (missing or stale) and of the seconds of video to (re)render."""
    return services.film.quote(owner, film_id)


@router.post(
    "/{film_id}/render",
    response_model=FilmRenderAccepted,
    status_code=202,
    summary="Render the film (one durable job; follow its events)",
    dependencies=[GenerationLimit],
)
def render_film(
    film_id: FilmId,
    services: ServicesDep,
    owner: OwnerId,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> FilmRenderAccepted:
    """Queues the render: its stages (images, narration, music, mix, motion, subtitles, encode, thumbnail, check)
    stream on ``events_url``. The video credits are held now (402/403 as for images); the scene images are charged
    as their jobs are queued. 409 ``film_rendering`` while a render of it is queued or running."""
    return services.film.render(owner, film_id, idempotency_key=idempotency_key)


@router.post("/{film_id}/cancel", response_model=FilmView, summary="Cancel the film's render")
def cancel_film(film_id: FilmId, services: ServicesDep, owner: OwnerId) -> FilmView:
    """A queued render stops at once (its credits are released), a running one at its next safe point; the scenes'
    queued image jobs are canceled too."""
    return services.film.cancel(owner, film_id)


@router.get(
    "/{film_id}/files/{name}",
    response_class=Response,
    responses=_FILE_RESPONSES,
    summary="A rendered file: film.mp4, film.srt, film.vtt or thumbnail.jpg",
)
def film_file(
    film_id: FilmId,
    name: FileName,
    request: Request,
    services: ServicesDep,
    owner: OwnerId,
    download: Annotated[bool, Query(description="Save it (Content-Disposition: attachment)")] = False,
) -> Response:
    """404 ``no_render`` before the film has been rendered. The MP4 answers Range requests (206)."""
    return _serve(services, services.film.file(owner, film_id, name), request, download=download)


# --- public share links --------------------------------------------------------------------------------------------
@public_router.get("/{token}", response_model=SharedFilmView, summary="A public film (its share link)")
def shared_film(token: Annotated[str, Path(max_length=64)], services: ServicesDep) -> SharedFilmView:
    """Only while its owner keeps it public (404 ``film_not_found`` otherwise)."""
    return services.film.shared(token)


@public_router.get(
    "/{token}/files/{name}",
    response_class=Response,
    responses=_FILE_RESPONSES,
    summary="A file of a public film",
)
def shared_film_file(
    token: Annotated[str, Path(max_length=64)],
    name: FileName,
    request: Request,
    services: ServicesDep,
    download: bool = False,
) -> Response:
    return _serve(services, services.film.shared_file(token, name), request, download=download)
