"""Pictures a person would rather see than read: retrieval contact sheets and training curves.

Drawn with Pillow alone (no plotting library). Text uses Pillow's built-in font; characters it
cannot draw (e.g. "→" in Pillow's default font) are replaced by ASCII look-alikes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from stylequery.fileio import atomic_file

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Box = tuple[int, int, int, int]

WHITE, INK, FAINT = (255, 255, 255), (40, 40, 40), (120, 120, 120)
HIT, MISS, PLACEHOLDER = (0, 160, 60), (210, 40, 40), (200, 200, 200)
SERIES = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]  # tab10, so up to ten curves keep distinct colours
# Fallbacks for arrows, dashes, ellipsis and curly quotes.
_ASCII = {"\u2192": "->", "\u2190": "<-", "\u2013": "-", "\u2014": "-", "\u2026": "..."}
_ASCII |= {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


@dataclass(frozen=True)
class SheetItem:
    """One retrieved image on a contact sheet.

    Attributes:
        path: image file; an unreadable one is drawn as a grey placeholder.
        score: similarity to the query.
        caption: the image's caption, if known.
        hit: whether it matches the target (outlined green/red); ``None`` when unknown.
    """

    path: Path
    score: float
    caption: str | None = None
    hit: bool | None = None


# ---- contact sheet --------------------------------------------------------------------------


@dataclass(frozen=True)
class _SheetLayout:
    thumb: int
    per_row: int

    @property
    def pad(self) -> int:  # room around a tile, wide enough for the hit outline
        return max(10, self.border + 6)

    @property
    def border(self) -> int:
        return max(3, self.thumb // 32)

    @property
    def font_size(self) -> int:
        return max(10, self.thumb // 12)

    @property
    def line(self) -> int:
        return self.font_size + 4

    @property
    def cell(self) -> tuple[int, int]:  # result tile + 3 text lines (rank/score, 2 caption)
        return self.thumb + 2 * self.pad, self.thumb + 3 * self.line + self.pad

    @property
    def grid_left(self) -> int:  # the query column, then a gap with a divider
        return self.pad + self.thumb + 3 * self.pad


def sheet_size(num_results: int, thumb: int = 160, per_row: int = 5) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of a contact sheet with ``num_results`` results.

    The sheet is as wide as its longest row of results (at most ``per_row``).
    """
    layout = _SheetLayout(thumb, per_row)
    cell_w, cell_h = layout.cell
    rows = max(1, math.ceil(num_results / per_row))
    columns = max(1, min(per_row, num_results))
    query_h = layout.pad + thumb + 4 * layout.line + layout.pad
    return layout.grid_left + columns * cell_w, max(query_h, layout.pad + rows * cell_h)


def result_box(position: int, thumb: int = 160, per_row: int = 5) -> Box:
    """Box ``(left, top, right, bottom)`` of the ``position``-th result's thumbnail (0-based)."""
    layout = _SheetLayout(thumb, per_row)
    cell_w, cell_h = layout.cell
    row, col = divmod(position, per_row)
    left, top = layout.grid_left + col * cell_w, layout.pad + row * cell_h
    return left, top, left + thumb, top + thumb


def contact_sheet(
    query_image: Path | Image.Image,
    query_text: str,
    results: Sequence[SheetItem],
    out: Path,
    thumb: int = 160,
    per_row: int = 5,
) -> Path:
    """Draw the query and its ranked results as one PNG.

    The query tile (with ``query_text``, e.g. "black → green", under it) sits on the left; the
    results follow in rank order, ``per_row`` to a row, each with "#rank score" and its caption.
    Known hits are outlined green, known misses red.

    Returns:
        ``out``, written atomically.
    """
    layout = _SheetLayout(thumb, per_row)
    sheet = Image.new("RGB", sheet_size(len(results), thumb, per_row), WHITE)
    draw = ImageDraw.Draw(sheet)
    font = _font(layout.font_size)
    bold = _font(layout.font_size + 2)
    sheet.paste(_thumbnail(query_image, thumb), (layout.pad, layout.pad))
    text_top = layout.pad + thumb + 4
    draw.text((layout.pad, text_top), "query", font=font, fill=FAINT)
    lines = _wrap(query_text, bold, thumb, max_lines=3)
    for i, text in enumerate(lines):
        draw.text((layout.pad, text_top + (i + 1) * layout.line), text, font=bold, fill=INK)
    divider_x = layout.pad + thumb + int(1.5 * layout.pad)
    draw.line([(divider_x, layout.pad), (divider_x, sheet.height - layout.pad)], fill=PLACEHOLDER)
    for position, item in enumerate(results):
        _draw_result(sheet, draw, layout, position, item, font)
    return _save_png(sheet, out)


def _draw_result(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    layout: _SheetLayout,
    position: int,
    item: SheetItem,
    font: Font,
) -> None:
    left, top, right, bottom = result_box(position, layout.thumb, layout.per_row)
    sheet.paste(_thumbnail(item.path, layout.thumb), (left, top))
    if item.hit is not None:
        b = layout.border
        colour = HIT if item.hit else MISS
        draw.rectangle([left - b, top - b, right + b - 1, bottom + b - 1], outline=colour, width=b)
    label = f"#{position + 1}  {item.score:.3f}"
    draw.text((left, bottom + 4), label, font=font, fill=INK)
    caption = _wrap(item.caption or "(no caption)", font, layout.thumb, max_lines=2)
    for i, text in enumerate(caption):
        draw.text((left, bottom + 4 + (i + 1) * layout.line), text, font=font, fill=FAINT)


def _thumbnail(source: Path | Image.Image, size: int) -> Image.Image:
    """The whole image letterboxed into a white ``size`` square; grey if unreadable."""
    try:
        if isinstance(source, Image.Image):
            image = source.convert("RGB")
        else:
            with Image.open(source) as opened:
                image = opened.convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return _placeholder(size)
    return ImageOps.pad(image, (size, size), color=WHITE)


def _placeholder(size: int) -> Image.Image:
    tile = Image.new("RGB", (size, size), PLACEHOLDER)
    draw = ImageDraw.Draw(tile)
    font = _font(max(10, size // 10))
    draw.text((size // 2, size // 2), "unreadable", font=font, fill=FAINT, anchor="mm")
    return tile


# ---- training curves ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Panel:
    box: Box  # plot area inside the axes
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (
            bottom - top
        )


def plot_curves(
    rows: Sequence[dict[str, float]],
    out: Path,
    x: str = "iteration",
    size: tuple[int, int] = (900, 400),
) -> Path:
    """Plot training curves: losses (left) and every ``recall@K`` column (right) against ``x``.

    Every key containing "loss" goes to the left panel, every "recall@K" key (also prefixed by
    its split, as ``val_recall@10``) to the right one.
    A row lacking a key, or holding a non-finite value for it, contributes no point to that
    curve, so recall rows logged only at evaluation iterations plot fine next to loss rows.

    Returns:
        ``out``, written atomically.
    """
    width, height = size
    image = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(image)
    keys = sorted({key for row in rows for key in row})
    losses = [key for key in keys if "loss" in key and key != x]
    recalls = sorted((k for k in keys if "recall@" in k), key=_recall_order)
    half = width // 2
    _draw_panel(draw, (0, 0, half, height), "loss", _series(rows, x, losses), x)
    _draw_panel(draw, (half, 0, width, height), "recall@K", _series(rows, x, recalls), x)
    return _save_png(image, out)


def plot_lines(
    series: dict[str, list[tuple[float, float]]],
    out: Path,
    title: str,
    x_label: str,
    size: tuple[int, int] = (1200, 500),
) -> Path:
    """One panel of named (x, y) curves, e.g. validation recall against minutes per recipe.

    Returns:
        ``out``, written atomically.
    """
    image = Image.new("RGB", size, WHITE)
    _draw_panel(ImageDraw.Draw(image), (0, 0, *size), title, series, x_label)
    return _save_png(image, out)


def _series(
    rows: Sequence[dict[str, float]], x: str, keys: list[str]
) -> dict[str, list[tuple[float, float]]]:
    """Finite (x, y) points per key, in row order."""
    series: dict[str, list[tuple[float, float]]] = {}
    for key in keys:
        points = [(float(row[x]), float(row[key])) for row in rows if x in row and key in row]
        points = [(px, py) for px, py in points if math.isfinite(px) and math.isfinite(py)]
        if points:
            series[key] = points
    return series


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    area: Box,
    title: str,
    series: dict[str, list[tuple[float, float]]],
    x_label: str,
) -> None:
    left, top, right, bottom = area
    font, title_font = _font(12), _font(16)
    draw.text(((left + right) // 2, top + 8), title, font=title_font, fill=INK, anchor="mt")
    box = (left + 64, top + 58, right - 20, bottom - 46)
    if not series:
        draw.rectangle(box, outline=PLACEHOLDER)
        draw.text(_centre(box), "no data", font=font, fill=FAINT, anchor="mm")
        return
    xs = [px for points in series.values() for px, _ in points]
    ys = [py for points in series.values() for _, py in points]
    panel = _Panel(box, _padded_range(xs, 0.02), _padded_range(ys, 0.08))
    _draw_axes(draw, panel, font)
    draw.text((_centre(box)[0], bottom - 8), x_label, font=font, fill=INK, anchor="md")
    for colour, points in zip(_colours(len(series)), series.values(), strict=True):
        pixels = [panel.to_pixel(px, py) for px, py in sorted(points)]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2, joint="curve")
        if len(pixels) <= 60:  # markers only where they stay readable
            for px, py in pixels:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    _draw_legend(draw, (box[0], top + 32), list(series), font)


def _draw_axes(draw: ImageDraw.ImageDraw, panel: _Panel, font: Font) -> None:
    left, _, right, bottom = panel.box
    values, step = _ticks(*panel.y_range)
    for value in values:
        y = panel.to_pixel(panel.x_range[0], value)[1]
        draw.line([(left, y), (right, y)], fill=(230, 230, 230))
        draw.text((left - 6, y), _format_tick(value, step), font=font, fill=INK, anchor="rm")
    values, step = _ticks(*panel.x_range)
    for value in values:
        x = panel.to_pixel(value, panel.y_range[0])[0]
        draw.line([(x, bottom), (x, bottom + 4)], fill=INK)
        draw.text((x, bottom + 6), _format_tick(value, step), font=font, fill=INK, anchor="mt")
    draw.rectangle(panel.box, outline=INK)


def _draw_legend(
    draw: ImageDraw.ImageDraw, origin: tuple[int, int], names: list[str], font: Font
) -> None:
    """One line of colour swatches and names above the plot area."""
    x, y = origin
    for colour, name in zip(_colours(len(names)), names, strict=True):
        draw.line([(x, y + 7), (x + 18, y + 7)], fill=colour, width=3)
        draw.text((x + 22, y), name, font=font, fill=INK)
        x += 22 + int(font.getlength(name)) + 14


def _padded_range(values: list[float], margin: float) -> tuple[float, float]:
    """Data range widened by ``margin`` of its span; a single value ``v`` gets ``v +- 10%``."""
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(1.0, abs(high)):
        spread = abs(high) * 0.1 or 1.0
        return low - spread, high + spread
    extra = (high - low) * margin
    return low - extra, high + extra


def _ticks(low: float, high: float, target: int = 5) -> tuple[list[float], float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) within ``[low, high]``."""
    raw = (high - low) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.ceil(low / step), math.floor(high / step)
    return [i * step for i in range(first, last + 1)], step


def _format_tick(value: float, step: float) -> str:
    """As many decimals as the tick step needs; thousands as "k" on wide integer axes."""
    if step >= 1000 and step % 1000 == 0:
        return f"{value / 1000:.0f}k" if value else "0"
    return f"{value:.{max(0, -math.floor(math.log10(step)))}f}"


def _recall_order(key: str) -> tuple[str, int, str]:
    split, _, suffix = key.rpartition("recall@")
    return (split, int(suffix), key) if suffix.isdigit() else (split, 1 << 30, key)


def _colours(count: int) -> list[tuple[int, int, int]]:
    return [SERIES[i % len(SERIES)] for i in range(count)]


def _centre(box: Box) -> tuple[int, int]:
    return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


# ---- shared ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(size: int) -> Font:
    """Pillow's built-in font at ``size`` (a fixed-size bitmap font without FreeType)."""
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=256)
def _has_glyph(font: Font, char: str) -> bool:
    """Whether ``font`` draws ``char`` as something other than its missing-glyph box."""

    def render(text: str) -> bytes:
        image = Image.new("L", (64, 64))
        ImageDraw.Draw(image).text((4, 4), text, font=font, fill=255)
        return image.tobytes()

    return render(char) != render("\uffff")


def _printable(text: str, font: Font) -> str:
    """Replace characters the font has no glyph for by ASCII look-alikes (or "?")."""
    return "".join(c if c.isascii() or _has_glyph(font, c) else _ASCII.get(c, "?") for c in text)


def _wrap(text: str, font: Font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last line ends in "..." if text is left over."""
    words = _printable(text, font).split()
    lines: list[str] = []
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and font.getlength(f"{line} {words[0]}") <= width:
            line = f"{line} {words.pop(0)}"
        lines.append(line)
    if lines and (words or font.getlength(lines[-1]) > width):
        last = lines[-1]
        while last and font.getlength(last + "...") > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + "..."
    return lines


def _save_png(image: Image.Image, out: Path) -> Path:
    with atomic_file(Path(out)) as tmp:
        image.save(tmp, format="PNG")
    return Path(out)
