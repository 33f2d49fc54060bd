"""Contact sheets and training curves: valid PNGs of the right size, outlines, placeholders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from stylequery import viz
from stylequery.viz import SheetItem, contact_sheet, plot_curves, result_box, sheet_size


def solid_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (30, 45)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def reopen(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.verify()  # raises on a broken PNG
    image = Image.open(path)
    assert image.format == "PNG"
    return image.convert("RGB")


@pytest.fixture
def results(tmp_path: Path) -> list[SheetItem]:
    blue = solid_image(tmp_path / "blue.jpg", (0, 0, 255))
    return [
        SheetItem(blue, 0.91, "green floral print midi dress", hit=True),
        SheetItem(blue, 0.85, "a caption long enough to need wrapping and then some more", False),
        SheetItem(tmp_path / "missing.jpg", 0.80, None, hit=None),
        SheetItem(blue, 0.70, "black dress"),
        SheetItem(blue, 0.60, "red dress", hit=True),
        SheetItem(blue, 0.50, "white dress", hit=False),
        SheetItem(blue, 0.40, "blue dress"),
    ]


@pytest.mark.parametrize(("thumb", "per_row"), [(160, 5), (64, 3)])
def test_contact_sheet_size_outlines_and_placeholder(
    tmp_path: Path, results: list[SheetItem], thumb: int, per_row: int
) -> None:
    query = solid_image(tmp_path / "query.png", (0, 0, 0))
    out = contact_sheet(
        query, "black → green", results, tmp_path / "s" / "sheet.png", thumb, per_row
    )
    sheet = reopen(out)
    assert sheet.size == sheet_size(len(results), thumb, per_row)
    for position, item in enumerate(results):
        left, top, right, bottom = result_box(position, thumb, per_row)
        outline = sheet.getpixel((left - 2, (top + bottom) // 2))
        expected = {True: viz.HIT, False: viz.MISS, None: viz.WHITE}[item.hit]
        assert outline == expected, f"result {position}"
        assert right <= sheet.width and bottom <= sheet.height
    left, top, _, _ = result_box(2, thumb, per_row)
    assert sheet.getpixel((left + 2, top + 2)) == viz.PLACEHOLDER


def test_contact_sheet_from_pil_image_and_no_results(tmp_path: Path) -> None:
    out = contact_sheet(Image.new("RGB", (10, 10), "red"), "red → blue", [], tmp_path / "a.png")
    assert reopen(out).size == sheet_size(0)


def test_contact_sheet_unreadable_query(tmp_path: Path, results: list[SheetItem]) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = contact_sheet(broken, "x", results[:1], tmp_path / "b.png", thumb=64)
    pad = viz._SheetLayout(64, 5).pad
    assert reopen(out).getpixel((pad + 2, pad + 2)) == viz.PLACEHOLDER


def test_sheet_grows_with_results() -> None:
    one, full, two_rows = sheet_size(1), sheet_size(5), sheet_size(6)
    assert one[0] < full[0] == two_rows[0]
    assert full[1] < two_rows[1]


def test_wrap_truncates_to_width() -> None:
    font = viz._font(12)
    lines = viz._wrap("word " * 40, font, width=100, max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= 100 for line in lines)
    assert viz._wrap("short", font, width=100, max_lines=2) == ["short"]
    assert viz._printable("black \u2192 green", font) in {"black \u2192 green", "black -> green"}


def training_rows(with_recall: bool) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    for it in range(0, 1001, 50):
        rows.append({"iteration": it, "loss": 2.0 * math.exp(-it / 300) + 0.2, "lr": 1e-3})
        if with_recall and it % 250 == 0:
            rows.append(
                {"iteration": it, "recall@1": 0.1 + it / 5000, "recall@10": 0.3 + it / 4000}
            )
    return rows


@pytest.mark.parametrize(
    "rows",
    [
        training_rows(with_recall=True),
        training_rows(with_recall=False),
        [{"iteration": 0, "loss": 1.5}],
        [{"iteration": i, "loss": 0.7, "recall@1": 0.0} for i in range(5)],
        [{"iteration": 0, "loss": float("nan")}, {"iteration": 1, "loss": 1.0}, {"step": 3}],
        [],
    ],
    ids=["with-recall", "loss-only", "single-row", "all-equal", "nan-and-missing", "empty"],
)
def test_plot_curves_writes_png(tmp_path: Path, rows: list[dict[str, float]]) -> None:
    out = plot_curves(rows, tmp_path / "curves.png")
    image = reopen(out)
    assert image.size == (900, 400)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 16) or []}
    has_loss = any("loss" in row and math.isfinite(row["loss"]) for row in rows)
    assert (viz.SERIES[0] in colours) == has_loss


def test_plot_curves_draws_recall_series(tmp_path: Path) -> None:
    image = reopen(
        plot_curves(training_rows(with_recall=True), tmp_path / "c.png", size=(600, 300))
    )
    assert image.size == (600, 300)
    right_half = image.crop((300, 0, 600, 300))
    colours = {colour for _, colour in right_half.getcolors(maxcolors=1 << 16) or []}
    assert viz.SERIES[0] in colours and viz.SERIES[1] in colours


def test_split_prefixed_recall_columns_are_plotted(tmp_path: Path) -> None:
    rows = [{"iteration": i, "loss": 1.0 / i, "val_recall@10": i / 10} for i in range(1, 6)]
    image = reopen(plot_curves(rows, tmp_path / "c.png", size=(600, 300)))
    colours = {colour for _, colour in image.crop((300, 0, 600, 300)).getcolors(1 << 16) or []}
    assert viz.SERIES[0] in colours


def test_plot_lines_draws_one_curve_per_name(tmp_path: Path) -> None:
    series = {"a": [(0.0, 0.1), (1.0, 0.5)], "b": [(0.5, 0.2), (2.0, 0.9)], "empty": []}
    image = reopen(viz.plot_lines(series, tmp_path / "l.png", "recall", "minutes", (500, 300)))
    assert image.size == (500, 300)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 16) or []}
    assert viz.SERIES[0] in colours and viz.SERIES[1] in colours


def test_ticks_are_round() -> None:
    values, step = viz._ticks(0.0, 1000.0)
    assert step == 200 and values == [0, 200, 400, 600, 800, 1000]
    assert viz._format_tick(20000, 5000) == "20k" and viz._format_tick(0.25, 0.05) == "0.25"
