"""Another AUTOMATIC1111 (or Forge, SD.Next) server as a worker, over its ``/sdapi/v1`` API (issue 18).

- **Where**: STUDIOLO_PROVIDER_A1111_BASE_URL (or the model's ``base_url`` option, for several servers), HTTP Basic
  from STUDIOLO_PROVIDER_A1111_AUTH ("user:password", the server's ``--api-auth``) when set.
- **Seeds**: A1111 gives image i of a batch the seed ``seed + i`` (and, with a variation strength, keeps the seed and
  counts the subseed up instead). A job whose seeds are consecutive and has no variation goes as one batch; any
  other job goes as one call per image. The ``all_seeds`` of the reply's ``info`` are checked against the request.
- **Progress**: the txt2img/img2img call blocks until the images are made, so it runs in a thread while this one
  polls ``GET /sdapi/v1/progress`` for the step and a live preview (the server's "live previews" setting).
  A1111 keeps one global progress: with other clients on the same server the steps shown may be theirs.
- **Cancel**: ``POST /sdapi/v1/interrupt`` (global on that server: it stops whatever it is sampling).
- **Cost**: 0 (your own server) unless the model's ``price_per_image`` option says otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image

from studiolo.domain.gallery.imaging import A1111_SAMPLER_NAMES, a1111_sampler_name
from studiolo.engines.base import (
    CancelCheck,
    Capabilities,
    EngineError,
    GeneratedImage,
    GenerationCanceled,
    GenerationRequest,
    ModelRef,
    StepCallback,
)
from studiolo.engines.remote.base import RemoteEngine, decode_b64_image, invalid_reply, png_bytes
from studiolo.engines.schedules import A1111_LABELS, SCHEDULES, is_automatic
from studiolo.settings import Settings

# How long, after an interrupt, to wait for the blocked call to come back before giving up on it.
INTERRUPT_GRACE_SECONDS = 10.0


def b64_png(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def consecutive(seeds: list[int]) -> bool:
    """True when A1111's batch (seed, seed+1, ...) makes exactly ``seeds``."""
    return all(seed == seeds[0] + i for i, seed in enumerate(seeds))


class A1111Engine(RemoteEngine):
    """AUTOMATIC1111's ``/sdapi/v1`` txt2img and img2img (with a mask: inpaint) on a server of your own."""

    name = "a1111"
    default_price = 0.0
    # Seconds between two /progress polls; tests make it shorter.
    poll_seconds = 0.5

    def base_url(self, settings: Settings) -> str:
        return settings.provider_a1111_base_url

    def auth_headers(self, settings: Settings) -> dict[str, str]:
        if not settings.provider_a1111_auth:
            return {}
        token = base64.b64encode(settings.provider_a1111_auth.encode("utf-8")).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def capabilities(self, model: ModelRef) -> Capabilities:
        return Capabilities(
            txt2img=True,
            img2img=True,
            inpaint=True,
            samplers=tuple(A1111_SAMPLER_NAMES),
            schedulers=tuple(s for s in SCHEDULES if not is_automatic(s)),
            variation_kinds=("txt2img", "img2img", "inpaint"),
        )

    def _url(self, model: ModelRef, path: str) -> str:
        """``path`` at the model's own server (its ``base_url`` option) or at the configured one."""
        base = model.options.get("base_url")
        return f"{str(base).rstrip('/')}{path}" if isinstance(base, str) and base else path

    # -- the request ---------------------------------------------------------------------------------------------
    def payload(self, request: GenerationRequest, seed: int, count: int, subseed: int | None) -> dict[str, Any]:
        """The txt2img/img2img body for ``count`` images from ``seed`` (A1111 field names)."""
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": seed,
            "batch_size": count,
            "n_iter": 1,
            "steps": request.steps,
            "cfg_scale": request.guidance,
            "width": request.width,
            "height": request.height,
            "override_settings": {"sd_model_checkpoint": request.model.remote_model},
            "override_settings_restore_afterwards": True,
            "send_images": True,
            "save_images": False,
        }
        if request.sampler and request.sampler != "default":
            body["sampler_name"] = a1111_sampler_name(request.sampler)
        if not is_automatic(request.scheduler) and request.scheduler is not None:
            body["scheduler"] = A1111_LABELS.get(request.scheduler, request.scheduler)
        if subseed is not None and request.variation_strength > 0:
            body["subseed"] = subseed
            body["subseed_strength"] = request.variation_strength
        if request.kind in ("img2img", "inpaint"):
            if request.init_image is None:
                raise EngineError(f"{request.kind} needs an init image.", code="invalid_request")
            body["init_images"] = [b64_png(request.init_image)]
            body["denoising_strength"] = request.strength
            body["resize_mode"] = 0
            if request.kind == "inpaint":
                if request.mask_image is None:
                    raise EngineError("inpaint needs a mask image (white = repaint).", code="invalid_request")
                body["mask"] = b64_png(request.mask_image.convert("L"))
                body["inpainting_fill"] = 1  # start from the original pixels under the mask
                body["inpaint_full_res"] = False
        return body

    def batches(self, request: GenerationRequest) -> list[tuple[int, int, int | None]]:
        """(seed, count, subseed) per call: one batch when A1111 would make the job's seeds, else one per image."""
        variation = request.variation_seeds if request.variation_strength > 0 else None
        if variation is None and consecutive(request.seeds):
            return [(request.seeds[0], request.n, None)]
        return [(seed, 1, variation[k] if variation else None) for k, seed in enumerate(request.seeds)]

    # -- the calls -----------------------------------------------------------------------------------------------
    def _generate(
        self, request: GenerationRequest, on_step: StepCallback, should_cancel: CancelCheck
    ) -> list[GeneratedImage]:
        path = "/sdapi/v1/img2img" if request.kind in ("img2img", "inpaint") else "/sdapi/v1/txt2img"
        url = self._url(request.model, path)
        price = self.price(request.model)
        calls = self.batches(request)
        out: list[GeneratedImage] = []
        for index, (seed, count, subseed) in enumerate(calls):
            body = self.payload(request, seed, count, subseed)
            image_no = index + 1 if len(calls) > 1 else 0
            reply = self._call_with_progress(request.model, url, body, on_step, should_cancel, image_no)
            images = self.read_reply(reply, [seed + i for i in range(count)])
            out.extend(GeneratedImage(image=img, seed=s, variation_seed=subseed, cost=price) for s, img in images)
        return out

    def _call_with_progress(
        self,
        model: ModelRef,
        url: str,
        body: dict[str, Any],
        on_step: StepCallback,
        should_cancel: CancelCheck,
        image_no: int,
    ) -> Any:
        """POST ``body`` in a thread; meanwhile report A1111's progress and honour a cancel with an interrupt."""
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                # No should_cancel here: the engine thread watches it (and the check may not be thread-safe).
                result["response"] = self.http.request("POST", url, json=body)
            except Exception as exc:  # noqa: BLE001 - handed to the engine thread, which raises it
                result["error"] = exc

        worker = threading.Thread(target=call, name="a1111-call", daemon=True)
        worker.start()
        last_step = -1
        while True:
            worker.join(self.poll_seconds)
            if not worker.is_alive():
                break
            if should_cancel():
                self._interrupt(model)
                worker.join(INTERRUPT_GRACE_SECONDS)
                raise GenerationCanceled()
            last_step = self._report_progress(model, on_step, image_no, last_step)
        if should_cancel():
            raise GenerationCanceled()
        if "error" in result:
            raise result["error"]
        return self.http.json(result["response"])

    def _report_progress(self, model: ModelRef, on_step: StepCallback, image_no: int, last_step: int) -> int:
        """One /progress poll -> on_step when the step moved; best effort (a failed poll is skipped)."""
        try:
            response = self.http.client.get(
                self._url(model, "/sdapi/v1/progress"), params={"skip_current_image": "false"}, timeout=5.0
            )
            progress = response.json() if response.is_success else None
        except (httpx.HTTPError, ValueError):
            return last_step
        if not isinstance(progress, dict) or not isinstance(progress.get("state"), dict):
            return last_step
        state = progress["state"]
        step, total = state.get("sampling_step"), state.get("sampling_steps")
        if not isinstance(step, int) or not isinstance(total, int) or total <= 0 or step < 1 or step == last_step:
            return last_step
        current = progress.get("current_image")
        preview: Callable[[], Image.Image | None] | None = None
        if isinstance(current, str) and current:
            preview = lambda: self._preview(current)  # noqa: E731 - decoded only when someone watches
        on_step(min(step, total), total, preview=preview, image=image_no)
        return step

    def _preview(self, data: str) -> Image.Image | None:
        try:
            return decode_b64_image(data, self.name)
        except EngineError:
            return None

    def _interrupt(self, model: ModelRef) -> None:
        # Best effort: the job is canceled either way; the server then finishes its images unseen.
        with contextlib.suppress(httpx.HTTPError):
            self.http.client.post(self._url(model, "/sdapi/v1/interrupt"), timeout=5.0)

    def read_reply(self, reply: Any, seeds: list[int]) -> list[tuple[int, Image.Image]]:
        """The reply's images for ``seeds``, after checking ``info.all_seeds`` says they are those seeds."""
        if not isinstance(reply, dict) or not isinstance(reply.get("images"), list):
            raise invalid_reply(self.name, "a reply without an images list")
        first = 0
        info = reply.get("info")
        if isinstance(info, str) and info:
            try:
                parsed = json.loads(info)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                # A grid (saved grids) comes first when the server adds one; index_of_first_image skips it.
                skip = parsed.get("index_of_first_image")
                first = skip if isinstance(skip, int) and skip >= 0 else 0
                made = parsed.get("all_seeds")
                if isinstance(made, list) and made[: len(seeds)] != seeds:
                    raise invalid_reply(self.name, f"images of seeds {made[: len(seeds)]} for seeds {seeds}")
        encoded = reply["images"][first : first + len(seeds)]
        if len(encoded) != len(seeds):
            raise invalid_reply(self.name, f"{len(encoded)} images for {len(seeds)} asked")
        return [(seed, decode_b64_image(data, self.name)) for seed, data in zip(seeds, encoded, strict=True)]
