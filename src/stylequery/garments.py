"""Procedural garment pictures for the synthetic catalogue: trousers, jeans and skirts.

A picture is a light background, a waistband and the garment body (two legs, or a skirt),
filled with a colour and a pattern. The cut of the subcategory sets the silhouette (skinny
legs are narrow, wide-leg ones flare, cropped ones stop short, harem ones balloon, cargo ones
carry pockets). A per-image random generator moves, scales and shades the garment slightly,
so two photos of one product differ while keeping every visible attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "black": (25, 25, 28),
    "white": (246, 246, 242),
    "blue": (40, 80, 170),
    "navy": (25, 35, 80),
    "green": (40, 130, 60),
    "red": (190, 30, 40),
    "grey": (128, 128, 132),
    "beige": (215, 195, 160),
    "brown": (110, 70, 40),
    "pink": (235, 140, 170),
    "khaki": (160, 150, 100),
    "burgundy": (110, 20, 40),
    "yellow": (230, 200, 50),
    "purple": (110, 60, 150),
}
PATTERNS = ("solid", "striped", "checked", "dotted", "distressed", "faded")


@dataclass(frozen=True)
class Cut:
    """Silhouette in units of the image side (y measured from the waist top)."""

    waist: float  # waist width
    band: float  # waistband height
    rise: float  # waist top to crotch (skirts: unused)
    knee_y: float  # waist top to knee
    length: float  # waist top to hem
    knee: float  # one leg's width at the knee
    hem: float  # one leg's width at the hem (skirts: the whole hem)
    pockets: bool = False


PANTS_CUTS: dict[str, Cut] = {
    "leggings": Cut(0.34, 0.03, 0.26, 0.55, 0.88, 0.11, 0.075),
    "wide-leg_and_palazzo_pants": Cut(0.42, 0.05, 0.28, 0.55, 0.88, 0.22, 0.32),
    "cropped_pants": Cut(0.42, 0.05, 0.28, 0.45, 0.64, 0.17, 0.16),
    "skinny_pants": Cut(0.40, 0.05, 0.28, 0.55, 0.88, 0.14, 0.09),
    "straight-leg_pants": Cut(0.42, 0.05, 0.28, 0.55, 0.88, 0.17, 0.16),
    "full_length_pants": Cut(0.42, 0.05, 0.30, 0.55, 0.90, 0.18, 0.18),
    "harem_pants": Cut(0.44, 0.06, 0.46, 0.62, 0.88, 0.27, 0.08),
    "cargo_pants": Cut(0.44, 0.05, 0.28, 0.55, 0.88, 0.19, 0.18, pockets=True),
}
SKIRT_CUTS: dict[str, Cut] = {
    "mini_skirts": Cut(0.36, 0.05, 0.0, 0.0, 0.36, 0.0, 0.50),
    "midi_skirts": Cut(0.36, 0.05, 0.0, 0.0, 0.62, 0.0, 0.56),
    "maxi_skirts": Cut(0.36, 0.05, 0.0, 0.0, 0.86, 0.0, 0.62),
    "pencil_skirts": Cut(0.36, 0.05, 0.0, 0.0, 0.60, 0.0, 0.38),
    "a-line_skirts": Cut(0.34, 0.05, 0.0, 0.0, 0.56, 0.0, 0.66),
}
CUTS: dict[str, dict[str, Cut]] = {"pants": PANTS_CUTS, "skirt": SKIRT_CUTS}


def contrast(colour: RGB) -> RGB:
    """A colour that reads against ``colour``: lighter for dark colours, darker for light."""
    rgb = np.array(colour, dtype=np.float64)
    dark = rgb @ np.array([0.299, 0.587, 0.114]) < 128  # luma
    rgb = rgb + (255 - rgb) * 0.55 if dark else rgb * 0.55
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def jitter(colour: RGB, rng: np.random.Generator, amount: int) -> RGB:
    """``colour`` with each channel moved by up to ``amount``."""
    moved = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (int(moved[0]), int(moved[1]), int(moved[2]))


def draw_garment(
    size: int,
    category: str,
    subcategory: str,
    colour: RGB,
    pattern: str,
    rng: np.random.Generator,
) -> Image.Image:
    """Draw one photo of a garment.

    Args:
        size: Square image side in pixels.
        category: "pants" or "skirt".
        subcategory: Key of :data:`CUTS` ``[category]``.
        colour: Base RGB colour of the product.
        pattern: One of :data:`PATTERNS`.
        rng: Per-image generator (position, scale, shade).

    Returns:
        An RGB image.
    """
    cut = CUTS[category][subcategory]
    scale = size * rng.uniform(0.86, 1.0)
    origin = (size * (0.5 + rng.uniform(-0.04, 0.04)), size * (0.05 + rng.uniform(0.0, 0.05)))
    mask = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(mask)
    if category == "pants":
        body = _pants_polygons(cut, origin, scale)
    else:
        body = _skirt_polygons(cut, origin, scale)
    for polygon in body:
        pen.polygon(polygon, fill=255)
    base = jitter(colour, rng, 6)
    fill = _pattern_fill(size, base, pattern, mask, rng)
    _details(fill, cut, category, origin, scale, base)
    background = jitter((246, 245, 242), rng, 8)
    return Image.composite(fill, Image.new("RGB", (size, size), background), mask)


def _pants_polygons(
    cut: Cut, origin: tuple[float, float], scale: float
) -> list[list[tuple[float, float]]]:
    cx, top = origin
    half = cut.waist * scale / 2
    crotch, knee_y, hem_y = (top + v * scale for v in (cut.rise, cut.knee_y, cut.length))
    polygons = [[(cx - half, top), (cx + half, top), (cx + half, crotch), (cx - half, crotch)]]
    for side in (-1, 1):
        # Leg centres splay outwards just enough that the inner hems never touch.
        knee_x = cx + side * max(half / 2, cut.knee * scale / 2 * 0.9)
        hem_x = cx + side * max(half / 2 + 0.02 * scale, (cut.hem / 2 + 0.02) * scale)
        k, h = cut.knee * scale / 2, cut.hem * scale / 2
        polygons.append(
            [
                (cx + side * half, top),
                (knee_x + side * k, knee_y),
                (hem_x + side * h, hem_y),
                (hem_x - side * h, hem_y),
                (knee_x - side * k, knee_y),
                (cx, crotch),
            ]
        )
    return polygons


def _skirt_polygons(
    cut: Cut, origin: tuple[float, float], scale: float
) -> list[list[tuple[float, float]]]:
    cx, top = origin
    half, hem_half, hem_y = cut.waist * scale / 2, cut.hem * scale / 2, top + cut.length * scale
    return [[(cx - half, top), (cx + half, top), (cx + hem_half, hem_y), (cx - hem_half, hem_y)]]


def _pattern_fill(
    size: int, base: RGB, pattern: str, mask: Image.Image, rng: np.random.Generator
) -> Image.Image:
    fill = Image.new("RGB", (size, size), base)
    pen = ImageDraw.Draw(fill)
    accent = contrast(base)
    period = max(3, size // 10)
    line = max(1, period // 3)
    if pattern in ("striped", "checked"):
        for x in range(int(rng.integers(period)), size, period):
            pen.rectangle((x, 0, x + line - 1, size), fill=accent)
    if pattern == "checked":
        for y in range(int(rng.integers(period)), size, period):
            pen.rectangle((0, y, size, y + line - 1), fill=accent)
    elif pattern == "dotted":
        radius = max(1, size // 48)
        for y in range(int(rng.integers(period)), size, period):
            for x in range((y // period % 2) * period // 2, size, period):
                pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=accent)
    elif pattern == "distressed":
        _distress(pen, mask, size, rng)
    elif pattern == "faded":
        glow = Image.new("L", (size, size), 0)
        x0, y0, x1, y1 = mask.getbbox() or (0, 0, size, size)
        ImageDraw.Draw(glow).ellipse((x0, y0 + (y1 - y0) // 4, x1, y1 - (y1 - y0) // 4), fill=150)
        glow = glow.filter(ImageFilter.GaussianBlur(max(1, size // 16)))
        fill = Image.composite(Image.new("RGB", (size, size), contrast(base)), fill, glow)
    return fill


def _distress(
    pen: ImageDraw.ImageDraw, mask: Image.Image, size: int, rng: np.random.Generator
) -> None:
    """Light horizontal rips at random places on the garment."""
    x0, y0, x1, y1 = mask.getbbox() or (0, 0, size, size)
    width = max(1, size // 64)
    for _ in range(int(rng.integers(4, 8))):
        x = int(rng.integers(x0, max(x0 + 1, x1)))
        y = int(rng.integers(y0 + (y1 - y0) // 4, max(y0 + 1, y1 - (y1 - y0) // 8)))
        length = int(rng.integers(2, max(3, size // 10)))
        pen.line((x, y, x + length, y), fill=(235, 235, 240), width=width)


def _details(
    fill: Image.Image, cut: Cut, category: str, origin: tuple[float, float], scale: float, base: RGB
) -> None:
    """Waistband and, for cargo trousers, pockets, drawn in a darker shade of the base."""
    pen = ImageDraw.Draw(fill)
    dark = tuple(int(c * 0.7) for c in base)
    cx, top = origin
    half = cut.waist * scale / 2
    pen.rectangle((cx - half, top, cx + half, top + cut.band * scale), fill=dark)
    if category == "pants" and cut.pockets:
        for side in (-1, 1):
            x = cx + side * (half - 0.01 * scale)  # outer edge of the pocket, on the leg
            y = top + 0.40 * scale
            w, h = 0.09 * scale, 0.12 * scale
            box = (min(x, x - side * w), y, max(x, x - side * w), y + h)
            pen.rectangle(box, outline=dark, width=max(1, int(scale) // 64), fill=base)
            pen.line((box[0], y + h / 3, box[2], y + h / 3), fill=dark, width=1)
