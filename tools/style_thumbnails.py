"""Make the style picker's thumbnails: one subject drawn in every built-in style by Studiolo's own demo model.

    python tools/style_thumbnails.py            # writes src/studiolo/web/static/styles/<slug>.webp

Each picture is a real job through the product's own path (GenerationService.submit applies the style
template exactly as it does for a user, the worker runs the demo engine with the default steps and guidance),
in a throw-away data directory, with one fixed seed: running it again gives the same pictures. The demo
model knows few words (a 64x64 toy world), so styles whose words it never learned look alike; thumbnails
from a real model can replace these files (same names, 128x128 WebP).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.generation.schemas import GenerationParams
from studiolo.domain.generation.styles import BUILTIN_STYLES
from studiolo.domain.generation.worker import Worker
from studiolo.engines.demo.engine import DEMO_MODEL_ID
from studiolo.services import Services, build_services
from studiolo.settings import Settings

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "studiolo" / "web" / "static" / "styles"
SUBJECT = "a lighthouse by the sea at dusk"
SEED = 7
SIDE = 128
QUALITY = 80


def _run_job(services: Services, params: GenerationParams) -> Image.Image:
    accepted, _ = services.generation.submit(LOCAL_USER_ID, params)
    worker = Worker("thumbnails", services.queue, services.runner, services.dispatch, services.settings)
    worker.run_once(threading.Event())
    view = services.generation.get(LOCAL_USER_ID, accepted.id)
    if view.status != "succeeded" or not view.outputs:
        raise SystemExit(f"style {params.style}: job {view.status}: {view.error}")
    key, _ = services.gallery.file(LOCAL_USER_ID, view.outputs[0].image_id, "original")
    return Image.open(io.BytesIO(services.gallery.read(key))).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for <slug>.webp (default: the package's)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="studiolo-thumbnails-") as data_dir:
        settings = Settings(
            env="development", data_dir=Path(data_dir), inline_workers=0, default_model=DEMO_MODEL_ID, device="cpu"
        )
        services = build_services(settings)
        try:
            for style in BUILTIN_STYLES:
                started = time.monotonic()
                params = GenerationParams(
                    prompt=SUBJECT, style=style.slug, size=f"{SIDE}x{SIDE}", seed=args.seed, model=DEMO_MODEL_ID
                )
                image = _run_job(services, params)
                if image.size != (SIDE, SIDE):
                    image = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
                path = args.out / f"{style.slug}.webp"
                # method 6: the encoder's best effort; these files are made once and downloaded by every visitor.
                image.save(path, format="WEBP", quality=QUALITY, method=6)
                seconds = time.monotonic() - started
                print(f"{path}  {path.stat().st_size:6d} bytes  {seconds:.1f} s  {style.apply(SUBJECT, '')[0]!r}")
        finally:
            services.close()


if __name__ == "__main__":
    main()
