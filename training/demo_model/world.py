"""A procedural 64x64 world for Studiolo's demo model: landscapes by time of day and coloured shapes, in styles.

Everything is drawn with numpy from a ``Scene`` (what is in the picture) and a seed (where exactly, which
details), so a scene renders identically on every machine and a training batch needs no dataset on disk.
Soft edges (a signed distance through a smoothstep) keep the pictures anti-aliased at this tiny size; a
picture takes about a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64
TIMES = ("day", "dusk", "night", "dawn")
LANDSCAPE_MAINS = ("lighthouse", "house", "mountains", "sea", "lake", "hills", "trees")
# Which settings each main object can stand in; "none" is plain grass (or open water for the sea).
SETTINGS: dict[str, tuple[str, ...]] = {
    "lighthouse": ("sea",),
    "house": ("none", "lake", "hills", "mountains", "trees", "sea"),
    "mountains": ("none", "lake"),
    "sea": ("none",),
    "lake": ("none", "mountains", "trees"),
    "hills": ("none", "trees"),
    "trees": ("none", "lake", "hills"),
}
SHAPES = ("circle", "square", "triangle", "star", "heart")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 140, 20),
    "yellow": (250, 225, 40),
    "green": (40, 170, 60),
    "blue": (35, 75, 215),
    "purple": (135, 50, 190),
    "pink": (245, 120, 185),
    "brown": (130, 80, 40),
    "black": (20, 20, 22),
    "white": (245, 245, 245),
    "gray": (130, 130, 135),
    "cyan": (40, 210, 225),
}
STYLES = ("plain", "pixel", "watercolor", "sketch", "neon")


@dataclass(frozen=True)
class Scene:
    """What a picture shows. ``color`` is the house or shape colour; ``background`` only applies to shapes."""

    kind: str  # "landscape" | "shape"
    main: str  # a LANDSCAPE_MAINS or SHAPES entry
    style: str = "plain"
    time: str = "day"
    setting: str = "none"
    color: str = "white"
    background: str = "white"


_YS, _XS = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
_YS += 0.5
_XS += 0.5

# Sky gradients (top, horizon) and the light that tints the land, per time of day.
_SKY = {
    "day": ((60, 125, 225), (175, 215, 250)),
    "dusk": ((55, 40, 110), (250, 120, 60)),
    "night": ((4, 6, 26), (22, 32, 72)),
    "dawn": ((120, 155, 220), (250, 200, 175)),
}
_LIGHT = {"day": 1.0, "dusk": 0.62, "night": 0.28, "dawn": 0.8}
_TINT = {
    "day": (1.0, 1.0, 1.0),
    "dusk": (1.1, 0.8, 0.75),
    "night": (0.7, 0.8, 1.25),
    "dawn": (1.08, 0.95, 0.95),
}


def _cov(dist: np.ndarray, soft: float = 0.75) -> np.ndarray:
    """Coverage (0..1) from a signed distance that is negative inside: an anti-aliased edge."""
    return np.clip(0.5 - dist / (2 * soft), 0.0, 1.0)


def _paint(img: np.ndarray, cov: np.ndarray, color: tuple[float, float, float] | np.ndarray) -> None:
    img += cov[..., None] * (np.asarray(color, dtype=np.float32) - img)


def _circle(cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(_XS - cx, _YS - cy) - r


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.maximum(np.maximum(x0 - _XS, _XS - x1), np.maximum(y0 - _YS, _YS - y1))


def _triangle(cx: float, top: float, base: float, half_width: float) -> np.ndarray:
    """An upward isosceles triangle as a signed distance (approximate, exact enough for 1 px edges)."""
    slope = half_width / max(base - top, 1e-3)
    side = (np.abs(_XS - cx) - slope * (_YS - top)) / np.sqrt(1 + slope * slope)
    return np.maximum(side, _YS - base)


def _lit(color: tuple[int, int, int] | np.ndarray, time: str) -> np.ndarray:
    """A surface colour under the light of ``time`` (darker and tinted at dusk and night)."""
    return np.asarray(color, dtype=np.float32) * _LIGHT[time] * np.asarray(_TINT[time], dtype=np.float32)


def _sky(img: np.ndarray, scene: Scene, horizon: float, rng: np.random.Generator) -> None:
    top, bottom = (np.asarray(c, dtype=np.float32) for c in _SKY[scene.time])
    t = np.clip(_YS / max(horizon, 1.0), 0, 1)[..., None]
    img[:] = top * (1 - t) + bottom * t
    if scene.time == "night":
        n = int(rng.integers(18, 34))
        xs = rng.integers(0, SIZE, n)
        ys = rng.integers(0, max(int(horizon) - 2, 1), n)
        img[ys, xs] = rng.uniform(170, 255, (n, 1))
        mx, my, mr = rng.uniform(12, 52), rng.uniform(7, 15), rng.uniform(4.0, 5.5)
        glow = np.exp(-np.maximum(_circle(mx, my, mr), 0) / 4.0) * 0.25
        _paint(img, glow, (200, 210, 240))
        moon = _cov(_circle(mx, my, mr))
        if rng.random() < 0.5:  # a crescent: the full disc minus a shifted one in the sky's colour
            moon = moon * (1 - _cov(_circle(mx + mr * 0.55, my - mr * 0.25, mr * 0.9)))
        _paint(img, moon, (240, 238, 215))
    else:
        if scene.time == "day":
            sx, sy, sr, col = rng.uniform(10, 54), rng.uniform(6, 14), rng.uniform(4.0, 5.5), (255, 245, 190)
        elif scene.time == "dusk":
            sx, sy, sr, col = rng.uniform(34, 54), horizon - rng.uniform(1, 5), rng.uniform(5.5, 7.5), (255, 120, 40)
        else:
            sx, sy, sr, col = rng.uniform(10, 30), horizon - rng.uniform(1, 5), rng.uniform(5, 6.5), (255, 220, 150)
        glow = np.exp(-np.maximum(_circle(sx, sy, sr), 0) / 6.0) * 0.45
        _paint(img, glow, col)
        _paint(img, _cov(_circle(sx, sy, sr)), col)


def _mountains(img: np.ndarray, scene: Scene, horizon: float, rng: np.random.Generator) -> None:
    for layer in range(2):
        ridge = np.full(SIZE, horizon, dtype=np.float32)
        for _ in range(int(rng.integers(2, 4))):
            px, height, width = rng.uniform(-5, 69), rng.uniform(14, 26) - layer * 5, rng.uniform(14, 24)
            ridge = np.minimum(ridge, horizon - height + np.abs(np.arange(SIZE) + 0.5 - px) * height / width)
        ridge += rng.uniform(-0.8, 0.8, SIZE).astype(np.float32)
        dist = ridge[None, :] - _YS
        base = np.asarray((95, 100, 125) if layer == 0 else (75, 85, 100), dtype=np.float32)
        _paint(img, _cov(np.maximum(dist, _YS - horizon - 1)), _lit(base, scene.time))
        snow = _cov(np.maximum(dist, _YS - (ridge.min() + 5 + layer * 2)))
        _paint(img, snow * (1.0 if layer == 0 else 0.7), _lit((235, 240, 250), scene.time))


def _trees(img: np.ndarray, scene: Scene, xs: list[float], base_y: float, rng: np.random.Generator) -> None:
    for x in xs:
        height = rng.uniform(9, 15)
        _paint(img, _cov(_box(x - 0.8, base_y - 3, x + 0.8, base_y)), _lit((90, 60, 30), scene.time))
        green = np.asarray((30, 110, 45), dtype=np.float32) * rng.uniform(0.8, 1.15)
        if rng.random() < 0.6:
            _paint(img, _cov(_triangle(x, base_y - height, base_y - 2, height * 0.32)), _lit(green, scene.time))
        else:
            _paint(img, _cov(_circle(x, base_y - height * 0.6, height * 0.38)), _lit(green, scene.time))


def _house(img: np.ndarray, scene: Scene, cx: float, base_y: float, rng: np.random.Generator) -> None:
    w, h = rng.uniform(9, 12), rng.uniform(8, 11)
    wall = _lit(COLORS[scene.color], scene.time)
    _paint(img, _cov(_box(cx - w, base_y - h, cx + w, base_y)), wall)
    roof = (150, 45, 35) if scene.color not in ("red", "brown", "orange") else (70, 60, 60)
    _paint(img, _cov(_triangle(cx, base_y - h - rng.uniform(7, 10), base_y - h, w + 2.5)), _lit(roof, scene.time))
    _paint(img, _cov(_box(cx - 2, base_y - 6, cx + 2, base_y)), _lit((80, 50, 30), scene.time))
    window = (255, 210, 90) if scene.time in ("night", "dusk") else _lit((120, 170, 220), scene.time)
    for wx in (cx - w * 0.6, cx + w * 0.6):
        _paint(img, _cov(_box(wx - 1.8, base_y - h + 2.5, wx + 1.8, base_y - h + 6)), window)


def _lighthouse(img: np.ndarray, scene: Scene, cx: float, base_y: float, rng: np.random.Generator) -> None:
    _paint(img, _cov(_circle(cx, base_y + 4, 9.0)), _lit((85, 80, 75), scene.time))
    top, half_base, half_top = base_y - rng.uniform(26, 31), 4.5, 2.8
    slope = (half_base - half_top) / (base_y - top)
    tower = np.maximum(np.abs(_XS - cx) - (half_top + slope * (_YS - top)), np.maximum(top - _YS, _YS - base_y))
    stripes = (np.floor((_YS - top) / 4.5) % 2 == 0)[..., None]
    body = np.where(stripes, _lit((235, 235, 235), scene.time), _lit((210, 35, 35), scene.time))
    cov = _cov(tower)[..., None]
    img += cov * (body - img)
    lamp = (255, 235, 120) if scene.time != "day" else (240, 220, 150)
    _paint(img, _cov(_box(cx - 2.2, top - 4, cx + 2.2, top)), lamp)
    _paint(img, _cov(_triangle(cx, top - 8, top - 4, 3.6)), _lit((40, 40, 45), scene.time))
    if scene.time in ("night", "dusk"):
        # The beam: a soft wedge from the lamp, the one feature that says "lighthouse" even in the dark.
        side = 1.0 if rng.random() < 0.5 else -1.0
        dx = (_XS - cx) * side
        beam = np.clip(1 - np.abs(_YS - (top - 2)) / np.maximum(dx * 0.18, 0.5), 0, 1) * (dx > 2)
        _paint(img, beam * 0.55, (255, 240, 170))


def _water(img: np.ndarray, scene: Scene, top: float, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Water below ``top`` where ``mask``: the picture above mirrored, darkened, with ripples."""
    rows = np.clip((2 * top - _YS).astype(np.int32), 0, SIZE - 1)
    ripple = np.sin(_YS * 2.1 + rng.uniform(0, 6)) * 1.2
    cols = np.clip((_XS + ripple).astype(np.int32), 0, SIZE - 1)
    mirrored = img[rows, cols]
    water = np.asarray((30, 70, 130), dtype=np.float32) * _LIGHT[scene.time]
    reflected = mirrored * 0.55 + water * 0.45
    waves = (np.sin(_XS * 0.7 + _YS * 3.0 + rng.uniform(0, 6)) > 0.93) & (top + 2 < _YS)
    reflected = np.where(waves[..., None], reflected * 1.25 + 15, reflected)
    cov = (mask * _cov(top - _YS))[..., None]
    img += cov * (reflected - img)


def _landscape(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), dtype=np.float32)
    horizon = float(rng.uniform(34, 42))
    _sky(img, scene, horizon, rng)
    main, setting = scene.main, scene.setting
    if main == "mountains" or setting == "mountains":
        _mountains(img, scene, horizon, rng)
    seaside = main in ("sea", "lighthouse") or setting == "sea"
    grass = _lit((70, 150, 60), scene.time)
    if seaside:
        _water(img, scene, horizon, np.ones((SIZE, SIZE), np.float32), rng)
        # Land: a shore on one side where the house or lighthouse stands (the open sea has none).
        shore_x = rng.uniform(20, 30) if main != "sea" else -10.0
        if main != "sea":
            shore = _cov(np.maximum(_XS - shore_x - (_YS - horizon) * 0.6, horizon + 4 - _YS))
            _paint(img, shore, grass if main == "house" else _lit((150, 135, 100), scene.time))
    else:
        _paint(img, _cov(horizon - _YS), grass)
    if main == "hills" or setting == "hills":
        for k in range(2):
            phase, amp = rng.uniform(0, 6.3), rng.uniform(3, 6)
            crest = horizon - amp - 2 + k * 6 + amp * np.sin(_XS[0] * rng.uniform(0.08, 0.14) + phase)
            shade = (55, 135, 50) if k == 0 else (85, 170, 70)
            _paint(img, _cov(crest[None, :] - _YS), _lit(shade, scene.time))
    if main == "lake" or setting == "lake":
        cx, ry = rng.uniform(24, 40), rng.uniform(6, 9)
        cy = horizon + ry + rng.uniform(2, 5)
        ellipse = np.hypot((_XS - cx) / rng.uniform(18, 26), (_YS - cy) / ry) - 1
        _water(img, scene, horizon, _cov(ellipse * 8), rng)
    if main == "trees" or setting == "trees":
        n = int(rng.integers(4, 8)) if main == "trees" else int(rng.integers(2, 4))
        xs = sorted(float(x) for x in rng.uniform(4, 60, n))
        _trees(img, scene, xs, horizon + rng.uniform(2, 8) if main == "trees" else horizon + 3, rng)
    if main == "house":
        cx = rng.uniform(12, 24) if setting == "sea" else rng.uniform(20, 44)
        _house(img, scene, cx, horizon + rng.uniform(8, 14), rng)
    elif main == "lighthouse":
        _lighthouse(img, scene, rng.uniform(10, 18), horizon + 6, rng)
    return img


def _shape_distance(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if shape == "circle":
        return _circle(cx, cy, r)
    if shape == "square":
        c, s = np.cos(angle), np.sin(angle)
        u, v = (_XS - cx) * c + (_YS - cy) * s, -(_XS - cx) * s + (_YS - cy) * c
        return np.maximum(np.abs(u), np.abs(v)) - r * 0.85
    if shape == "triangle":
        return _triangle(cx, cy - r, cy + r * 0.8, r)
    if shape == "star":
        theta = np.arctan2(_YS - cy, _XS - cx) + np.pi / 2
        # A five-pointed star in polar form: the radius swings between the inner and outer points.
        k = np.abs(((theta * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2
        return np.hypot(_XS - cx, _YS - cy) - r * (0.45 + 0.6 * k)
    # heart: two lobes and a triangle pointing down
    lobes = np.minimum(_circle(cx - r * 0.45, cy - r * 0.25, r * 0.5), _circle(cx + r * 0.45, cy - r * 0.25, r * 0.5))
    slope = 0.95
    point = np.maximum(
        (np.abs(_XS - cx) - slope * (cy + r * 0.95 - _YS)) / np.sqrt(1 + slope * slope), cy - r * 0.1 - _YS
    )
    return np.minimum(lobes, point)


def _shape(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    bg = np.asarray(COLORS[scene.background], dtype=np.float32)
    img = np.broadcast_to(bg * rng.uniform(0.92, 1.05), (SIZE, SIZE, 3)).copy()
    img += (_YS / SIZE - 0.5)[..., None] * rng.uniform(-20, 20)
    r = rng.uniform(13, 20)
    cx, cy = rng.uniform(r + 4, SIZE - r - 4), rng.uniform(r + 4, SIZE - r - 4)
    col = np.asarray(COLORS[scene.color], dtype=np.float32) * rng.uniform(0.92, 1.05)
    _paint(img, _cov(_shape_distance(scene.main, cx, cy, r, rng.uniform(-0.3, 0.3))), col)
    return img


def _blur(img: np.ndarray, passes: int = 1) -> np.ndarray:
    """A cheap separable [1 2 1] blur with edge clamping."""
    out = img
    for _ in range(passes):
        p = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = (p[:-2, 1:-1] + 2 * p[1:-1, 1:-1] + p[2:, 1:-1]) / 4
        p = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = (p[1:-1, :-2] + 2 * p[1:-1, 1:-1] + p[1:-1, 2:]) / 4
    return out


def _edges(img: np.ndarray) -> np.ndarray:
    lum = img.mean(axis=2)
    gx = np.abs(np.diff(lum, axis=1, append=lum[:, -1:]))
    gy = np.abs(np.diff(lum, axis=0, append=lum[-1:, :]))
    return np.clip((gx + gy) / 40.0, 0, 1)


def _stylize(img: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    if style == "pixel":
        # Big 4x4 pixels and a coarse palette: the look of old game art.
        small = img.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
        small = np.round(small / 48) * 48
        return np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)
    if style == "watercolor":
        soft = _blur(img, 2)
        washed = soft * 0.8 + 255 * 0.2
        paper = rng.normal(0, 6, (SIZE, SIZE, 1)).astype(np.float32)
        return washed - _edges(soft)[..., None] * 45 + paper
    if style == "sketch":
        # Coloured pencil: dark lines and hatching over a pale wash of the scene's colours, so colour and
        # time of day stay readable in this style too.
        lines = _edges(img)
        shade = (255 - img.mean(axis=2)) / 255
        hatch = ((_XS + _YS) % 4 < 1) * shade * 0.45
        ink = np.clip(lines * 1.6 + hatch, 0, 1)[..., None]
        wash = img * 0.45 + np.asarray((245, 240, 228), dtype=np.float32) * 0.55
        return wash * (1 - ink) + 40 * ink
    if style == "neon":
        # Glowing saturated outlines over a darkened scene (dim enough to glow, bright enough to keep the sky).
        lines = _edges(img)
        hue = img / np.maximum(img.max(axis=2, keepdims=True), 1.0)
        glow = _blur(lines[..., None] * hue * 255, 2) * 2.2
        return img * 0.3 + np.asarray((10, 0, 20), dtype=np.float32) + lines[..., None] * hue * 255 + glow
    return img


def render(scene: Scene, seed: int) -> np.ndarray:
    """The 64x64x3 uint8 picture of ``scene``; the seed picks positions, sizes and details."""
    rng = np.random.default_rng(seed)
    img = _landscape(scene, rng) if scene.kind == "landscape" else _shape(scene, rng)
    img = _stylize(img, scene.style, rng)
    return np.clip(img, 0, 255).astype(np.uint8)
