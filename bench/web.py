"""Web studio speed in a real browser: the gallery's paint times and what the generator page ships.

Starts `studiolo serve` on a fresh data directory whose administrator owns 500 images (varied 512x512 PNGs
with real WebP thumbnails, stored through the gallery's write path the worker uses), then drives Debian's
chromium with Playwright:

- GET /gallery cold (a fresh browser context each time: empty HTTP cache, no service worker) and warm (one
  context, after a first visit installed the service worker and filled the caches): First Contentful Paint
  and Largest Contentful Paint from Chromium's performance API. Target (issue "Web studio"): LCP <= 1.0 s.
- The JavaScript and CSS the generator page loads: its <script>/<link rel=stylesheet> URLs and every module
  they import, fetched with Accept-Encoding: gzip; compressed and raw bytes. Target: <= 150 KB compressed.
- The size of the gallery page's HTML (48 tiles).

    python -m bench.web [--images 500] [--loads 10]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from bench._server import ADMIN_EMAIL, ADMIN_PASSWORD, ok, percentile, sign_in, studiolo_server
from studiolo.domain.accounts.models import LOCAL_USER_ID
from studiolo.domain.gallery import imaging
from studiolo.domain.gallery.models import Image
from studiolo.domain.gallery.service import search_text
from studiolo.services import build_services
from studiolo.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LCP_TARGET_S = 1.0
SHIPPED_TARGET_KB = 150
WORDS = ["lighthouse", "fox", "harbour", "castle", "forest", "neon", "city", "river", "mountain", "dusk", "snow"]
STYLES = ["none", "watercolor", "cyberpunk", "anime", "photorealistic", "pixel-art"]

# Resolves once the largest-contentful-paint entries are in (buffered: the ones from before this ran).
PAINT_TIMES_JS = """
() => new Promise((resolve) => {
  const nav = performance.getEntriesByType("navigation")[0];
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  let lcp = null;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) lcp = entry;
  }).observe({ type: "largest-contentful-paint", buffered: true });
  setTimeout(() => resolve({
    fcp: fcp ? fcp.startTime : null,
    lcp: lcp ? lcp.startTime : null,
    lcp_element: lcp && lcp.element ? lcp.element.tagName.toLowerCase() : null,
    ttfb: nav.responseStart,
    load: nav.loadEventEnd,
    bytes: nav.transferSize + performance.getEntriesByType("resource").reduce((n, r) => n + r.transferSize, 0),
    controlled: Boolean(navigator.serviceWorker && navigator.serviceWorker.controller),
  }), 300);
})
"""


# --- data -------------------------------------------------------------------------------------------------
def picture(rng: random.Random, size: int = 512) -> PILImage.Image:
    """A varied picture that compresses like a generated one: gradient sky, shapes, grain."""
    top, bottom = [rng.randrange(256) for _ in range(3)], [rng.randrange(256) for _ in range(3)]
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (np.array(top) * (1 - t) + np.array(bottom) * t).repeat(size, axis=1)
    img = PILImage.fromarray(sky.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(6, 16)):
        x, y = rng.randrange(size), rng.randrange(size)
        r = rng.randrange(20, size // 3)
        color = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((x - r, y - r // 2, x + r, y + r), fill=color)
    grain = np.random.default_rng(rng.randrange(2**32)).normal(0, 6, (size, size, 3))
    return PILImage.fromarray(np.clip(np.asarray(img, dtype=np.float64) + grain, 0, 255).astype(np.uint8), "RGB")


def fill_gallery(data_dir: Path, count: int) -> float:
    """``count`` images for the local owner (the administrator created later adopts them); returns seconds."""
    started = time.monotonic()
    services = build_services(Settings(data_dir=data_dir, inline_workers=0))
    rng = random.Random(7)
    now = datetime.now(UTC)
    try:
        for start in range(0, count, 50):
            rows = []
            for i in range(start, min(count, start + 50)):
                img = picture(rng)
                prompt = " ".join(rng.sample(WORDS, 4))
                style, seed = rng.choice(STYLES), rng.randrange(2**32)
                meta = {"prompt": prompt, "style": style, "seed": seed, "model": "echo", "generator": "studiolo"}
                parameters = imaging.a1111_parameters(
                    prompt=prompt, negative_prompt="", steps=4, sampler="Euler", cfg_scale=1.0, seed=seed,
                    width=img.width, height=img.height, model="echo",
                )  # fmt: skip
                png = imaging.encode_png(img, parameters=parameters, metadata=meta)
                files = services.gallery.write_files(png, imaging.make_thumbnails(img), [])
                rows.append(
                    Image(
                        owner_id=LOCAL_USER_ID, prompt=prompt, style=style, model_id="echo", seed=seed, steps=4,
                        guidance=1.0, sampler="euler", width=img.width, height=img.height,
                        original_key=files.original_key, thumbnail_keys=files.thumbnail_keys,
                        size_bytes=files.size_bytes, meta=meta, tags=[], search_text=search_text(prompt, []),
                        starred=i % 7 == 0, created_at=now - timedelta(seconds=count - i),
                    )
                )  # fmt: skip
            with services.db.session() as session:
                session.add_all(rows)
    finally:
        services.close(timeout=10)
    return time.monotonic() - started


# --- what a page ships ------------------------------------------------------------------------------------
class Assets(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.urls: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append(a["src"] or "")
        elif tag == "link" and a.get("rel") in ("stylesheet", "modulepreload") and a.get("href"):
            self.urls.append(a["href"] or "")


_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+\.js[^"']*)["']""")


def shipped(client: httpx.Client, page_url: str) -> list[tuple[str, int, int]]:
    """(path, compressed bytes, raw bytes) of every script and stylesheet ``page_url`` loads, imports followed."""
    html = client.get(page_url)
    html.raise_for_status()
    todo = [urljoin(page_url, u) for u in Assets(html.text).urls]
    seen: dict[str, tuple[int, int]] = {}
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        r = client.get(url, headers={"Accept-Encoding": "gzip"})
        r.raise_for_status()
        seen[url] = (r.num_bytes_downloaded, len(r.content))
        if urlsplit(url).path.endswith(".js"):
            todo += [urljoin(url, spec) for spec in _IMPORT.findall(r.text)]
    return [(urlsplit(u).path + ("?" + urlsplit(u).query if urlsplit(u).query else ""), *s) for u, s in seen.items()]


def html_size(client: httpx.Client, url: str) -> tuple[int, int]:
    r = client.get(url, headers={"Accept-Encoding": "gzip"})
    r.raise_for_status()
    return r.num_bytes_downloaded, len(r.content)


# --- the browser ------------------------------------------------------------------------------------------
def cookie_session(base: str, data_dir: Path) -> list[dict[str, Any]]:
    """Sign in the way the studio's sign-in page does (cookies); returned as Playwright cookies."""
    sign_in(base, data_dir)  # creates the administrator on first use
    r = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "use_cookies": True},
        timeout=30,
    )
    r.raise_for_status()
    cookies = []
    for cookie in r.cookies.jar:
        path = cookie.path if cookie.path_specified else "/"
        cookies.append({"name": cookie.name, "value": cookie.value or "", "domain": "127.0.0.1", "path": path})
    return cookies


def paint_times(base: str, cookies: list[dict[str, Any]], loads: int) -> dict[str, list[dict[str, Any]]]:
    """``loads`` visits of /gallery per mode: cold (fresh context each time), warm with the service worker
    (installed by a first visit), and warm with the HTTP cache alone (service workers blocked)."""
    from playwright.sync_api import sync_playwright

    runs: dict[str, list[dict[str, Any]]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:

            def visit(context: Any) -> dict[str, Any]:
                page = context.new_page()
                try:
                    response = page.goto(f"{base}/gallery", wait_until="load")
                    if response is None or response.status != 200 or urlsplit(page.url).path != "/gallery":
                        raise RuntimeError(f"/gallery did not load: {page.url}")
                    page.wait_for_load_state("networkidle")
                    result: dict[str, Any] = page.evaluate(PAINT_TIMES_JS)
                    result["tiles"] = page.locator("#gallery .tile").count()
                    return result
                finally:
                    page.close()

            def context(**options: Any) -> Any:
                ctx = browser.new_context(**options)
                ctx.add_cookies(cookies)
                return ctx

            runs["cold"] = []
            for _ in range(loads):
                ctx = context()
                runs["cold"].append(visit(ctx))
                ctx.close()
            for mode, options in (("warm", {}), ("warm, no SW", {"service_workers": "block"})):
                ctx = context(**options)
                visit(ctx)  # fills the HTTP cache (and installs the service worker, where allowed)
                if not options:
                    page = ctx.new_page()
                    page.goto(f"{base}/offline")
                    page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
                    page.close()
                runs[mode] = [visit(ctx) for _ in range(loads)]
                ctx.close()
        finally:
            browser.close()
    return runs


# --- report -----------------------------------------------------------------------------------------------
def ms(values: list[float | None], q: float) -> str:
    present = [v for v in values if v is not None]
    return f"{percentile(present, q):7.0f}" if present else "    n/a"


def summary(name: str, runs: list[dict[str, Any]]) -> Iterator[str]:
    for key, label in (("ttfb", "TTFB"), ("fcp", "FCP"), ("lcp", "LCP"), ("load", "load event")):
        values = [r[key] for r in runs]
        yield f"  {name:<12} {label:<11} p50 {ms(values, 0.5)} ms   p95 {ms(values, 0.95)} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--loads", type=int, default=10, help="cold loads, then as many warm loads")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install chromium (a browser is never downloaded)")

    with tempfile.TemporaryDirectory(prefix="studiolo-bench-web-") as tmp:
        data_dir = Path(tmp) / "data"
        took = fill_gallery(data_dir, args.images)
        files = sum(1 for p in data_dir.rglob("*") if p.is_file() and p.suffix in (".png", ".webp"))
        print(f"{args.images} images ({files} files) written through the gallery service in {took:.1f} s")
        with studiolo_server(data_dir) as (base, _proc):
            cookies = cookie_session(base, data_dir)
            with httpx.Client(base_url=base, cookies={c["name"]: c["value"] for c in cookies}, timeout=30) as client:
                listed = ok(client.get("/api/v1/images", params={"limit": 1}))["items"]
                assert listed, "the administrator does not own the images"
                assets = shipped(client, f"{base}/generate")
                gallery_html = html_size(client, "/gallery")
                generate_html = html_size(client, "/generate")
            runs = paint_times(base, cookies, args.loads)

    cores = len(os.sched_getaffinity(0))
    cold, warm = runs["cold"], runs["warm"]
    print(f"\nGET /gallery, {args.loads} loads per mode, headless chromium 1280x720, {cores} cores (shared):")
    print(f"  tiles on the page: {cold[0]['tiles']}; LCP element: {cold[0]['lcp_element']}")
    print(f"  warm loads controlled by the service worker: {sum(r['controlled'] for r in warm)}/{len(warm)}")
    for mode, mode_runs in runs.items():
        for line in summary(mode, mode_runs):
            print(line)
    cold_kb = [r["bytes"] / 1024 for r in cold]
    print(f"  bytes over the wire per cold load: {sum(cold_kb) / len(cold_kb):.0f} KB (HTML, CSS, JS, thumbnails)")

    total_gz, total_raw = sum(a[1] for a in assets), sum(a[2] for a in assets)
    print("\nJS + CSS loaded by /generate (gzip):")
    print(f"  {'file':<44} {'gzip':>9} {'raw':>9}")
    for path, gz, raw in sorted(assets):
        print(f"  {path:<44} {gz / 1024:7.1f} KB {raw / 1024:7.1f} KB")
    print(f"  {'total':<44} {total_gz / 1024:7.1f} KB {total_raw / 1024:7.1f} KB")
    print("\nHTML:")
    for name, (gz, raw) in ((f"/gallery ({cold[0]['tiles']} tiles)", gallery_html), ("/generate", generate_html)):
        print(f"  {name:<44} {gz / 1024:7.1f} KB {raw / 1024:7.1f} KB")

    print("\n| figure                          | value        | target    | ratio to target |")
    print("|---------------------------------|--------------|-----------|-----------------|")
    for mode, mode_runs in runs.items():
        lcp = percentile([r["lcp"] for r in mode_runs if r["lcp"] is not None], 0.95) / 1000
        name = f"LCP p95, /gallery {mode}"
        print(f"| {name:<31} | {lcp:9.3f} s  | <= {LCP_TARGET_S:.1f} s  | {lcp / LCP_TARGET_S:15.2f} |")
    kb, name = total_gz / 1024, "JS+CSS for /generate, gzip"
    print(f"| {name:<31} | {kb:9.1f} KB | <= {SHIPPED_TARGET_KB} KB | {kb / SHIPPED_TARGET_KB:15.2f} |")


if __name__ == "__main__":
    main()
