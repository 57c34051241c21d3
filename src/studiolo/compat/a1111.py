"""AUTOMATIC1111's web UI API (``/sdapi/v1``) over Studiolo's job queue (issue 18; docs/compatibility.md).

txt2img and img2img queue an ordinary job (same queue, limits, credits and gallery) and answer when it ends, in
A1111's shape: raw base64 PNGs carrying A1111's ``parameters`` text, the request echoed, and ``info`` as a JSON
string. Everything is per caller: /progress and /interrupt see the caller's jobs, /options' checkpoint is the
caller's own. Auth: HTTP Basic whose password is an API key (``--api-auth`` style), or Bearer.
"""

from __future__ import annotations

import base64
import io
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from PIL import Image, ImageFilter, ImageOps
from starlette.concurrency import run_in_threadpool

from studiolo.compat import a1111_adapters
from studiolo.compat import a1111_info as info
from studiolo.compat.a1111_live import (
    LivePreviews,
    active_jobs,
    current_model,
    find_model,
    memory,
    progress,
    set_current_model,
)
from studiolo.compat.a1111_models import (
    A1111Request,
    Img2ImgRequest,
    PngInfoRequest,
    Txt2ImgRequest,
    decode_image,
    find_styles,
    to_params,
)
from studiolo.compat.jobs import TERMINAL, follow_job, read_outputs
from studiolo.deps import GenerationLimit, OwnerId, PrincipalDep, ServicesDep
from studiolo.domain.accounts.authn import Principal
from studiolo.domain.generation.cancel_all import cancel_all
from studiolo.domain.generation.pnginfo import read_png_info
from studiolo.domain.generation.service import Upload
from studiolo.errors import InvalidInput, NotFound, StudioloError
from studiolo.services import Services

router = APIRouter(tags=["AUTOMATIC1111 API"])


class GenerationFailed(StudioloError):
    """The job failed without an image; ``code`` is the job's own error code, ``details.job_id`` names it."""

    status_code = 500
    code = "generation_failed"


def _previews(request: Request) -> LivePreviews:
    """This app's live previews (one store per app, made on first use)."""
    store = getattr(request.app.state, "a1111_previews", None)
    if store is None:
        store = request.app.state.a1111_previews = LivePreviews()
    return store


def _model_for(services: Services, principal: Principal, req: A1111Request) -> str:
    """override_settings.sd_model_checkpoint, else the caller's chosen checkpoint, else the install's default."""
    override = (req.override_settings or {}).get("sd_model_checkpoint")
    if isinstance(override, str) and override.strip():
        return find_model(services, override)
    return current_model(services, principal.user_id)


def _mask(services: Services, req: Img2ImgRequest) -> Upload | None:
    """The inpainting mask (white = repaint, as in A1111), inverted and blurred as the request says."""
    if not req.mask:
        return None
    upload = services.generation.validate_upload(decode_image(req.mask, "mask"), field="mask", mode="L")
    radius = req.blur_radius()
    if not radius and not req.inpainting_mask_invert:
        return upload
    with Image.open(io.BytesIO(upload.png)) as image:
        mask = image.convert("L")
    if req.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    if radius:
        mask = mask.filter(ImageFilter.GaussianBlur(radius))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return Upload(png=out.getvalue())


def _submit(services: Services, owner: str, principal: Principal, req: A1111Request) -> tuple[str, list[str]]:
    """Queue the job; returns its id and the style names applied."""
    styles = find_styles(req.styles or [], services.generation.style_catalog(owner).styles) if req.styles else []
    model = _model_for(services, principal, req)
    init = mask = None
    kind: Any = "txt2img"
    strength = None
    if isinstance(req, Img2ImgRequest):
        if not req.init_images:
            raise NotFound("Init image not found", code="init_image_not_found", details={"field": "init_images"})
        init = services.generation.validate_upload(decode_image(req.init_images[0], "init_images"), field="init_images")
        mask = _mask(services, req)
        kind = "inpaint" if mask is not None else "img2img"
        strength = req.denoising_strength if req.denoising_strength is not None else 0.75
    if isinstance(req, Txt2ImgRequest) and req.enable_hr and not _takes_hires(services, model):
        req.skip_hires()
    params = to_params(
        req,
        model=model,
        styles=styles,
        strength=strength,
        context=services.generation.validation_context,
        upscalers=services.catalog.upscalers(),
        adapters=services.generation.adapters.ids(),
    )
    accepted, _created = services.generation.submit(
        owner,
        params,
        kind=kind,
        init_image=init,
        mask_image=mask,
        as_admin=principal.is_admin,
        api_key_id=principal.api_key_id or None,
    )
    return accepted.id, [s.slug for s in styles]


def _takes_hires(services: Services, model_id: str) -> bool:
    """Whether ``model_id`` can do hires fix (a diffusers model; not the demo, echo or hosted ones)."""
    ref = services.catalog.resolve(model_id)
    engine = services.engines.get(ref.engine)
    return engine is not None and engine.capabilities(ref).hires


async def _generate(
    request: Request, services: Services, owner: str, principal: Principal, req: A1111Request
) -> dict[str, Any]:
    job_id, styles = await run_in_threadpool(_submit, services, owner, principal, req)
    previews = _previews(request)
    view = None
    try:
        async for event in follow_job(services, owner, job_id, types={"preview"}):
            if event["type"] == "preview" and event.get("data_url"):
                previews.put(job_id, event["data_url"])
            elif event["type"] in TERMINAL:
                view = event["view"]
    finally:
        previews.drop(job_id)
    if view is None:  # pragma: no cover - follow_job always ends with the terminal event
        raise AssertionError("follow_job ended without the job's end")
    if view.status == "failed" and not view.outputs:
        error = view.error
        raise GenerationFailed(
            error.message if error else "The generation failed.",
            code=error.code if error else "generation_failed",
            details={"job_id": job_id},
        )
    # Canceled (POST /interrupt) answers with what was made, as A1111 does after an interrupt.
    outputs = await run_in_threadpool(read_outputs, services, owner, view)
    pngs = [o.png for o in outputs]
    return {
        "images": [base64.b64encode(png).decode("ascii") for png in pngs] if req.send_images else [],
        "parameters": info.echo_parameters(req),
        "info": info.job_info(req, view, pngs, styles=styles),
    }


@router.post("/txt2img", dependencies=[GenerationLimit])
async def txt2img(
    request: Request, services: ServicesDep, owner: OwnerId, principal: PrincipalDep, body: Txt2ImgRequest
) -> dict[str, Any]:
    """Generate from a prompt; blocks until the job ends (STUDIOLO_COMPAT_WAIT_SECONDS at most)."""
    return await _generate(request, services, owner, principal, body)


@router.post("/img2img", dependencies=[GenerationLimit])
async def img2img(
    request: Request, services: ServicesDep, owner: OwnerId, principal: PrincipalDep, body: Img2ImgRequest
) -> dict[str, Any]:
    """Generate from ``init_images[0]`` (inpaint when ``mask`` is given); blocks until the job ends."""
    return await _generate(request, services, owner, principal, body)


@router.get("/progress")
def get_progress(
    request: Request, services: ServicesDep, owner: OwnerId, skip_current_image: bool = False
) -> dict[str, Any]:
    """The caller's newest running (else queued) job; idle: progress 0 and job_count 0."""
    return progress(services, _previews(request), owner, skip_image=skip_current_image)


@router.post("/interrupt")
def interrupt(services: ServicesDep, owner: OwnerId) -> dict[str, Any]:
    """Cancel all the caller's queued and running jobs (a blocked txt2img answers with what was made)."""
    cancel_all(services.generation, owner)
    return {}


@router.post("/skip")
def skip(services: ServicesDep, owner: OwnerId) -> None:
    """Cancel the caller's current (newest running) job only; queued ones go on."""
    running = [job_id for job_id, status in active_jobs(services, owner) if status == "running"]
    if running:
        services.generation.cancel(owner, running[0])


@router.post("/png-info")
def png_info(services: ServicesDep, body: PngInfoRequest) -> dict[str, Any]:
    """The A1111 text a PNG carries (``info``), its other text chunks (``items``) and the text parsed."""
    if not body.image:
        raise InvalidInput("image is required.", code="missing_image", details={"field": "image"})
    data = decode_image(body.image, "image")
    found = read_png_info(data, max_bytes=services.settings.max_upload_bytes)
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        chunks = {str(k): v for k, v in image.info.items() if isinstance(v, str)}
    text = chunks.pop("parameters", "")
    return {"info": text, "items": chunks, "parameters": found.parameters if found.source else {}}


@router.get("/options")
def get_options(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    """The caller's checkpoint and A1111's usual settings."""
    return info.options(current_model(services, principal.user_id))


@router.post("/options")
def set_options(services: ServicesDep, principal: PrincipalDep, body: Annotated[dict[str, Any], Body()]) -> None:
    """Accepts the whole dict (Open WebUI posts every option back); only ``sd_model_checkpoint`` is applied, to the
    caller's account."""
    title = body.get("sd_model_checkpoint")
    if title is None:
        return
    if not isinstance(title, str) or not title.strip():
        raise InvalidInput("sd_model_checkpoint must be a checkpoint title.", code="invalid_input")
    set_current_model(services, principal.user_id, title)


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    return info.cmd_flags(request.url.port)


@router.get("/sd-models")
def sd_models(services: ServicesDep, owner: OwnerId) -> list[dict[str, Any]]:
    """The models that draw images, as A1111 checkpoints (title = ``name [shorthash]``)."""
    return info.sd_models(services.catalog.models())


@router.post("/refresh-checkpoints")
def refresh_checkpoints(services: ServicesDep, owner: OwnerId) -> None:
    services.catalog.models(fresh=True)


@router.get("/samplers")
def samplers(owner: OwnerId) -> list[dict[str, Any]]:
    return info.samplers()


@router.get("/schedulers")
def schedulers(owner: OwnerId) -> list[dict[str, Any]]:
    return info.schedulers()


@router.get("/upscalers")
def upscalers(services: ServicesDep, owner: OwnerId) -> list[dict[str, Any]]:
    return info.upscalers(services.catalog.upscalers())


@router.get("/prompt-styles")
def prompt_styles(services: ServicesDep, owner: OwnerId) -> list[dict[str, Any]]:
    """Built-in styles and the caller's own."""
    return info.prompt_styles(services.generation.style_catalog(owner).styles)


@router.get("/latent-upscale-modes")
def latent_upscale_modes(owner: OwnerId) -> list[dict[str, Any]]:
    return info.latent_upscale_modes()  # hires fix's "latent" upscaler takes any of them


@router.get("/sd-vae")
def sd_vae(owner: OwnerId) -> list[dict[str, Any]]:
    return []  # each model uses its own VAE


@router.get("/loras")
def loras(services: ServicesDep, owner: OwnerId) -> list[dict[str, Any]]:
    """The installed LoRAs (what ``<lora:name:w>`` names; compat/a1111_adapters.py)."""
    return a1111_adapters.loras(services.adapters)


@router.get("/memory")
def get_memory(owner: OwnerId) -> dict[str, Any]:
    return memory()


@router.get("/scripts")
def scripts(owner: OwnerId) -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/embeddings")
def embeddings(services: ServicesDep, owner: OwnerId) -> dict[str, dict[str, Any]]:
    """The installed embeddings: those fitting the caller's checkpoint loaded, the others skipped."""
    try:
        model = services.catalog.resolve(current_model(services, owner))
    except StudioloError:
        model = None  # no checkpoint to compare with: all are listed as loaded
    return a1111_adapters.embeddings(services.adapters, model)
