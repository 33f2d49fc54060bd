"""Data: label parsing and its errors, siblings, queries, prepare, prepared folders, datasets."""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stylequery import release
from stylequery.captions import SiblingIndex, every_query, normalize_caption, sample_queries
from stylequery.config import DataConfig
from stylequery.data import (
    ImageDataset,
    PairDataset,
    caption_labels,
    collate_pairs,
    generate_queries,
    is_sibling,
    load_image,
    load_prepared,
    modification_text,
    query_target_labels,
    query_texts,
)
from stylequery.errors import ConfigError, DataError
from stylequery.labels import read_label_file, resolve_categories, subset_name
from stylequery.prepare import prepare
from stylequery.vocab import Vocab

TRAIN = "pants_train_detect_all.txt"
TEST = "pants_test_detect_all.txt"
GOOD = "women/pants/skinny_pants/10000001/10000001_0.jpeg\t0.9123\tblack skinny jeans"
TEMPLATE = "change {src} to {tgt}"


def write_labels(root: Path, train: Sequence[str], test: Sequence[str] = (GOOD,)) -> Path:
    """A catalogue root with pants label files holding the given lines."""
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / TRAIN).write_text("".join(f"{x}\n" for x in train), encoding="utf-8")
    (root / "labels" / TEST).write_text("".join(f"{x}\n" for x in test), encoding="utf-8")
    return root


def data_config(root: Path, **changes: object) -> DataConfig:
    cfg = DataConfig(root=str(root))
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def label_lines(root: Path, split: str) -> list[str]:
    text = (root / "labels" / f"pants_{split}_detect_all.txt").read_text(encoding="utf-8")
    return text.splitlines()


# --- captions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  black 7.5\tjeans?  & co*  ", "black 7dotmark5 jeansquestionmark andmark costarmark"),
        ("black   skinny  jeans", "black skinny jeans"),
        ("women\u2019s jeans", "women\u2019s jeans"),
        (
            "women\u00e2\u20ac\u2122s zenko\u00ae pants",
            "women\u00e2\u20ac\u2122s zenko\u00ae pants",
        ),
        ("   ", ""),
    ],
)
def test_normalize_caption(raw: str, normalised: str) -> None:
    assert normalize_caption(raw) == normalised


def test_caption_equality_is_on_the_normalised_string(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("a.jpeg\t0.5\t black  jeans\nb.jpeg\t0.5\tblack jeans \n", encoding="utf-8")
    rows = read_label_file(path)
    assert rows[0].caption == rows[1].caption == "black jeans"


def test_label_file_with_bom_crlf_blank_lines_and_tabs_in_captions(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbfa.jpeg\t0.5\tblack\tjeans\r\n\r\n./b/c.jpeg\t1\tred jeans\r\n")
    rows = read_label_file(path, "labels/x.txt")
    assert [(r.path, r.caption, r.line) for r in rows] == [
        ("a.jpeg", "black jeans", 1),
        ("b/c.jpeg", "red jeans", 3),
    ]
    assert rows[1].where == "labels/x.txt:3"


# --- bad input: every error names the file and the line ---------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("women/pants/a/1/1_0.jpeg\t0.9", "expected 3 tab-separated fields"),
        ("women/pants/a/1/1_0.jpeg 0.9 black jeans", "expected 3 tab-separated fields"),
        ("/data/women/pants/a/1/1_0.jpeg\t0.9\tblack jeans", "absolute"),
        ("C:/women/1_0.jpeg\t0.9\tblack jeans", "absolute"),
        ("../elsewhere/1_0.jpeg\t0.9\tblack jeans", "outside the catalogue root"),
        ("women/../../1_0.jpeg\t0.9\tblack jeans", "outside the catalogue root"),
        ("\t0.9\tblack jeans", "empty image path"),
        ("women/pants/a/1/1_0.jpeg\tabc\tblack jeans", "not a number"),
        ("women/pants/a/1/1_0.jpeg\tnan\tblack jeans", "not a number"),
        ("women/pants/a/1/1_0.jpeg\t0.9\t   ", "empty caption"),
    ],
)
def test_bad_label_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    root = write_labels(tmp_path, [GOOD, "", line, GOOD])
    with pytest.raises(DataError, match=message) as info:
        prepare(data_config(root))
    assert f"{TRAIN}:3: " in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_line_in_the_test_file_names_it(tmp_path: Path) -> None:
    root = write_labels(tmp_path, [GOOD], [GOOD, "x.jpeg\t0.1"])
    with pytest.raises(DataError, match=f"{TEST}:2: expected 3"):
        prepare(data_config(root))


def test_non_utf8_label_file_names_the_line_of_the_first_bad_byte(tmp_path: Path) -> None:
    root = write_labels(tmp_path, [GOOD], [GOOD])
    (root / "labels" / TRAIN).write_bytes(
        f"{GOOD}\n{GOOD}\n".encode() + b"women/a/1_0.jpeg\t0.9\tzenko\xae jeans\n"
    )
    with pytest.raises(DataError, match=f"{TRAIN}:3: not valid UTF-8"):
        prepare(data_config(root))


def test_missing_labels_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="labels folder not found"):
        prepare(data_config(tmp_path))


def test_missing_label_file_of_a_selected_category(tmp_path: Path) -> None:
    root = write_labels(tmp_path, [GOOD])
    (root / "labels" / TEST).unlink()
    with pytest.raises(DataError, match=f"{TEST}: label file not found"):
        prepare(data_config(root))
    with pytest.raises(DataError, match=r"skirt_train_detect_all\.txt: label file not found"):
        prepare(data_config(write_labels(tmp_path, [GOOD]), categories=["skirt"]))


def test_all_means_every_category_with_label_files(tmp_path: Path) -> None:
    root = write_labels(tmp_path, [GOOD])
    for split in ("train", "test"):
        (root / "labels" / f"skirt_{split}_detect_all.txt").write_text(GOOD, encoding="utf-8")
    (root / "labels" / "notes.txt").write_text("not a label file", encoding="utf-8")
    assert resolve_categories(root, ["all"]) == ["pants", "skirt"]
    assert resolve_categories(root, ["skirt", "pants", "skirt"]) == ["pants", "skirt"]


def test_subset_names_are_deterministic_and_safe() -> None:
    assert subset_name(["pants"]) == "pants"
    assert subset_name(["skirt", "pants"]) == subset_name(["pants", "skirt"]) == "pants+skirt"
    assert subset_name(["all"]) == "all"
    assert subset_name(["pants"], ["leggings", "cargo_pants"]) == "pants-cargo_pants+leggings"
    assert subset_name(["pa/nts"], ["a b"]) == "pa_nts-a_b"


def test_no_images_left_after_filtering(tiny_catalogue_copy: Path) -> None:
    cfg = data_config(tiny_catalogue_copy, subcategories=["no_such_subcategory"])
    with pytest.raises(DataError, match=f"{TRAIN}: no train images left") as info:
        prepare(cfg)
    assert "outside subcategories" in str(info.value)


def test_no_images_left_when_all_are_missing(tmp_path: Path) -> None:
    root = write_labels(tmp_path, [GOOD, GOOD.replace("_0", "_1")])
    with pytest.raises(DataError, match=f"{TRAIN}: no train images left .*2 missing"):
        prepare(data_config(root))


def test_strict_names_the_first_missing_image_and_its_label_line(
    tiny_catalogue_copy: Path,
) -> None:
    root = tiny_catalogue_copy
    path = label_lines(root, "train")[1].split("\t")[0]
    (root / path).unlink()
    with pytest.raises(DataError, match=f"{TRAIN}:2: image {path}: not found"):
        prepare(data_config(root), strict=True)


def test_missing_and_corrupt_images_are_dropped_and_listed(tiny_catalogue_copy: Path) -> None:
    root = tiny_catalogue_copy
    lines = label_lines(root, "train")
    gone, broken = lines[0].split("\t")[0], lines[2].split("\t")[0]
    (root / gone).unlink()
    (root / broken).write_bytes(b"this is not a jpeg")
    summary = prepare(data_config(root))
    assert summary.missing_images == 2
    assert summary.images["train"] == len(lines) - 2
    missing = (summary.out / "missing.txt").read_text(encoding="utf-8").splitlines()
    assert missing[1] == f"labels/{TRAIN}:1\t{gone}\tnot found"
    assert missing[2].startswith(f"labels/{TRAIN}:3\t{broken}\tunreadable")
    train_tsv = (summary.out / "train.tsv").read_text(encoding="utf-8")
    assert gone not in train_tsv and broken not in train_tsv
    manifest = json.loads((summary.out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["train"]["missing"] == 2


def _truncate_into_a_large_jpeg(path: Path) -> None:
    """A JPEG whose header reads fine but whose pixel data is cut short."""
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_image_that_fails_to_decode_is_dropped_from_split_and_cache(
    tiny_catalogue_copy: Path,
) -> None:
    root = tiny_catalogue_copy
    lines = label_lines(root, "test")
    _truncate_into_a_large_jpeg(root / lines[1].split("\t")[0])
    summary = prepare(data_config(root), image_cache=16)
    assert summary.images["test"] == len(lines) - 1
    assert f"labels/{TEST}:2\t" in (summary.out / "missing.txt").read_text(encoding="utf-8")
    prepared = load_prepared(summary.out)
    cache = prepared.image_cache("test", 16)
    assert cache is not None and cache.shape == (len(lines) - 1, 16, 16, 3)
    for i, path in enumerate(prepared.image_paths("test")):
        assert torch.equal(
            load_image(path, 16), torch.from_numpy(np.array(cache[i])).permute(2, 0, 1)
        )


# --- prepare: atomicity ----------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_failed_prepare_keeps_the_earlier_prepared_folder(
    tiny_catalogue_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_catalogue_copy
    first = prepare(data_config(root)).out
    before = _snapshot(first)

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(importlib.import_module("stylequery.prepare"), "_write_missing", fail)
    with pytest.raises(OSError, match="disk full"):
        prepare(data_config(root))
    assert _snapshot(first) == before
    left = [p.name for p in first.parent.iterdir() if p.name != f".{first.name}.lock"]
    assert left == [first.name]  # no temporary leftovers


def test_strict_decode_failure_inside_the_cache_keeps_the_earlier_folder(
    tiny_catalogue_copy: Path,
) -> None:
    root = tiny_catalogue_copy
    first = prepare(data_config(root)).out
    before = _snapshot(first)
    path = label_lines(root, "train")[0].split("\t")[0]
    _truncate_into_a_large_jpeg(root / path)
    # --strict decodes every image fully, so the check finds the cut before the cache is built
    with pytest.raises(DataError, match=f"{TRAIN}:1: image {path}: unreadable: image file is"):
        prepare(data_config(root), strict=True, image_cache=16)
    assert _snapshot(first) == before


def test_prepare_refuses_to_replace_the_root_or_unrelated_folders(
    tiny_catalogue_copy: Path, tmp_path: Path
) -> None:
    root = tiny_catalogue_copy
    with pytest.raises(DataError, match="cannot be the catalogue root"):
        prepare(data_config(root), out=root)
    with pytest.raises(DataError, match="cannot be the catalogue root"):
        prepare(data_config(root), out=tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious", encoding="utf-8")
    with pytest.raises(DataError, match="not a prepared folder"):
        prepare(data_config(root), out=tmp_path / "mine")
    with pytest.raises(DataError, match="not a folder"):
        prepare(data_config(root), out=tmp_path / "mine" / "thesis.tex")


# --- prepare end to end ----------------------------------------------------------------------


def test_prepared_folder_is_complete_and_consistent(
    tiny_catalogue: Path, tiny_prepared: Path
) -> None:
    manifest = json.loads((tiny_prepared / "manifest.json").read_text(encoding="utf-8"))
    assert tiny_prepared == tiny_catalogue / "prepared" / "pants"
    counts = manifest["counts"]
    prepared = load_prepared(tiny_prepared)
    for split in ("train", "test"):
        items = prepared.split(split)
        assert counts[split]["images"] == len(items) == len(label_lines(tiny_catalogue, split))
        assert counts[split]["captions"] == len({it.caption for it in items})
        assert all((tiny_catalogue / it.path).is_file() for it in items)
    assert counts["train"]["usable_sources"] == len(prepared.siblings("train").usable_sources())
    assert counts["test"]["queries"] == len(prepared.queries) > 0
    assert prepared.vocab == Vocab.build(it.caption for it in prepared.split("train"))
    assert manifest["vocab_size"] == len(prepared.vocab)
    assert manifest["known_release"] is False
    assert manifest["queries"]["source"] == "generated"
    assert manifest["image_cache"]["files"]["train"] == "cache_train_32.npy"
    for entry in manifest["label_files"]:
        digest = hashlib.sha256((tiny_catalogue / entry["path"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest and entry["known_release"] is False
    assert prepared.root == tiny_catalogue.resolve()


def test_summary_rows_name_every_count(tiny_catalogue_copy: Path) -> None:
    summary = prepare(data_config(tiny_catalogue_copy))
    rows = dict(summary.rows())
    assert rows["train images"] == str(summary.images["train"])
    assert rows["test queries"].startswith(f"{summary.test_queries} (generated")
    assert rows["known Fashion200k release"] == "no"
    assert rows["image cache"] == "none"
    assert summary.known_release is False and summary.cache_seconds is None


def test_queries_file_of_the_prepared_folder_uses_the_reference_format(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    test = prepared.split("test")
    lines = (tiny_prepared / "test_queries.txt").read_text(encoding="utf-8").splitlines()
    assert lines == [f"{test[s].path} {test[t].path}" for s, t in prepared.queries]


def test_known_release_is_recognised_by_size_then_hash(
    tiny_catalogue_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_catalogue_copy
    known = {
        f"labels/{name}": release.ReleaseFile(
            (root / "labels" / name).stat().st_size, release.sha256_file(root / "labels" / name)
        )
        for name in (TRAIN, TEST)
    }
    monkeypatch.setattr(release, "KNOWN_LABEL_FILES", known)
    summary = prepare(data_config(root))
    assert summary.known_release is True
    assert dict(summary.rows())["known Fashion200k release"] == "yes"

    def no_hashing(path: Path) -> str:
        raise AssertionError("hashed although the size differs")

    monkeypatch.setattr(release, "sha256_file", no_hashing)
    known[f"labels/{TRAIN}"] = release.ReleaseFile(1, "0" * 64)
    assert release.matches_release(root / "labels" / TRAIN, f"labels/{TRAIN}") is False
    assert release.matches_release(root / "labels" / TRAIN, "labels/other.txt") is None


def test_release_checksums_match_the_shared_pointer_file() -> None:
    pointers = Path("/work/shared/fashion200k_labels/lfs_pointers.tsv")
    if not pointers.is_file():
        pytest.skip("shared checksum file not available")
    rows = [line.split("\t") for line in pointers.read_text().splitlines()]
    expected = {r[0]: (int(r[1]), r[2]) for r in rows if r[0].startswith("labels/")}
    assert {k: tuple(v) for k, v in release.KNOWN_LABEL_FILES.items()} == expected


# --- query file ------------------------------------------------------------------------------


def test_query_file_lines_outside_the_split_or_not_siblings_are_skipped(
    tiny_catalogue_copy: Path,
) -> None:
    root = tiny_catalogue_copy
    rows = [line.split("\t") for line in label_lines(root, "test")]
    index = SiblingIndex.build([normalize_caption(r[2]) for r in rows])
    s, t = sample_queries(index, 0)[0]
    a, b = next(
        (i, j)
        for i in range(len(rows))
        for j in range(len(rows))
        if i != j
        and not is_sibling(index.captions[index.labels[i]], index.captions[index.labels[j]])
    )
    train_path = label_lines(root, "train")[0].split("\t")[0]
    (root / "test_queries.txt").write_text(
        f"{rows[s][0]} {rows[t][0]}\n\n{train_path} {rows[t][0]}\n{rows[a][0]}\t{rows[b][0]}\n",
        encoding="utf-8",
    )
    summary = prepare(data_config(root))
    assert (summary.queries_source, summary.test_queries, summary.skipped_queries) == (
        "test_queries.txt",
        1,
        2,
    )
    prepared = load_prepared(summary.out)
    assert prepared.queries == [(s, t)]
    info = prepared.manifest["queries"]
    assert (info["skipped_outside_split"], info["skipped_not_siblings"]) == (1, 1)


def test_query_file_without_usable_lines_falls_back_to_generated(
    tiny_catalogue_copy: Path,
) -> None:
    root = tiny_catalogue_copy
    (root / "test_queries.txt").write_text("a.jpeg b.jpeg\n", encoding="utf-8")
    assert prepare(data_config(root)).queries_source == "generated"


def test_malformed_query_file_line(tiny_catalogue_copy: Path) -> None:
    root = tiny_catalogue_copy
    (root / "test_queries.txt").write_text("a.jpeg b.jpeg\na.jpeg b.jpeg c.jpeg\n", "utf-8")
    with pytest.raises(DataError, match=r"test_queries.txt:2: expected 'source_path target_path'"):
        prepare(data_config(root))


# --- siblings, pairs and queries against brute force ----------------------------------------


def random_captions(seed: int, n: int = 80) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["black", "blue", "red", "skinny", "jeans", "pants"]
    return [" ".join(rng.choice(words, size=rng.integers(1, 5))) for _ in range(n)]


def brute_siblings(a: str, b: str) -> bool:
    x, y = a.split(), b.split()
    return len(x) == len(y) and sum(1 for i in range(len(x)) if x[i] != y[i]) == 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_siblings_match_brute_force(seed: int) -> None:
    captions = random_captions(seed)
    index = SiblingIndex.build(captions)
    assert index.captions == list(dict.fromkeys(captions))
    assert [index.captions[c] for c in index.labels] == captions
    for c, caption in enumerate(index.captions):
        expected = [d for d, other in enumerate(index.captions) if brute_siblings(caption, other)]
        assert index.siblings(c) == expected
        assert index.num_siblings(c) == len(expected)
        assert index.images[c] == [i for i, x in enumerate(captions) if x == caption]
    usable = [i for i, x in enumerate(captions) if any(brute_siblings(x, y) for y in captions)]
    assert index.usable_sources() == usable


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_targets_are_siblings_and_cover_all_of_them(seed: int) -> None:
    captions = random_captions(seed)
    index = SiblingIndex.build(captions)
    rng = np.random.default_rng(seed)
    for source in index.usable_sources()[:15]:
        seen = set()
        for _ in range(150):
            target = index.sample_target(source, rng)
            assert brute_siblings(captions[source], captions[target])
            seen.add(captions[target])
        assert seen == {index.captions[c] for c in index.siblings(int(index.labels[source]))}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_query_pairs_each_image_with_each_sibling_caption_once(seed: int) -> None:
    captions = random_captions(seed)
    index = SiblingIndex.build(captions)
    pairs = [(s, captions[t]) for s, t in every_query(index)]
    expected = [
        (s, caption)
        for s in range(len(captions))
        for caption in dict.fromkeys(captions)
        if brute_siblings(captions[s], caption)
    ]
    assert sorted(pairs) == sorted(expected) and len(set(pairs)) == len(pairs)


def test_generated_queries_are_deterministic_sibling_pairs(tiny_prepared: Path) -> None:
    test = load_prepared(tiny_prepared).split("test")
    queries = generate_queries(test, seed=5)
    assert queries == generate_queries(test, seed=5)
    assert [s for s, _ in queries] == SiblingIndex.build(
        [it.caption for it in test]
    ).usable_sources()
    for s, t in queries:
        assert s != t and is_sibling(test[s].caption, test[t].caption)
    assert load_prepared(tiny_prepared).queries == generate_queries(test, seed=0)


def test_modification_texts_and_labels(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    test = prepared.split("test")
    texts = query_texts(prepared, "replace {src} with {tgt}")
    assert len(texts) == len(prepared.queries)
    assert all(t.startswith("replace ") and " with " in t for t in texts)
    assert modification_text("black skinny jeans", "blue skinny jeans", TEMPLATE) == (
        "change black to blue"
    )
    with pytest.raises(DataError, match="not siblings"):
        modification_text("black jeans", "blue pants", TEMPLATE)
    labels = caption_labels(test)
    assert labels.dtype == np.int64 and labels.shape == (len(test),)
    for i in range(len(test)):
        for j in range(len(test)):
            assert (labels[i] == labels[j]) == (test[i].caption == test[j].caption)
    targets = query_target_labels(prepared)
    assert targets.tolist() == [labels[t] for _, t in prepared.queries]


def test_parsing_siblings_and_queries_scale_to_the_real_pants_subset(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    colours = ["black", "blue", "red", "navy", "grey", "white", "beige", "green"]
    cuts = ["skinny", "cropped", "wide-leg", "cargo", "harem", "straight-leg"]
    lines = []
    for i in range(31_644):  # 26,301 train + 5,343 test lines in the real release
        words = [rng.choice(colours), f"brand{rng.integers(400)}", rng.choice(cuts), "pants"]
        lines.append(f"women/pants/skinny_pants/{i}/{i}_0.jpeg\t0.9\t{' '.join(words)}\n")
    path = tmp_path / "labels.txt"
    path.write_text("".join(lines), encoding="utf-8")
    rows = read_label_file(path)
    index = SiblingIndex.build([r.caption for r in rows])
    queries = sample_queries(index, 0)
    Vocab.build(index.captions)
    assert len(rows) == 31_644 and len(queries) > 20_000


# --- images ----------------------------------------------------------------------------------


def test_load_image_resizes_the_shorter_side_and_crops_the_centre(tmp_path: Path) -> None:
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0)
    pixels[:, 32:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 32)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert image[:, 5, 0].tolist() == [255, 0, 0] and image[:, 5, 31].tolist() == [0, 0, 255]
    Image.fromarray(np.full((50, 30), 7, dtype=np.uint8)).save(tmp_path / "grey.png")
    grey = load_image(tmp_path / "grey.png", 16)
    assert grey.shape == (3, 16, 16) and int(grey.max()) == 7


def test_unreadable_image_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.jpeg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad\.jpeg: cannot read image"):
        load_image(tmp_path / "bad.jpeg", 32)
    with pytest.raises(DataError, match=r"gone\.jpeg: image file not found"):
        load_image(tmp_path / "gone.jpeg", 32)


def test_cache_holds_exactly_the_pixels_of_load_image(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    for split in ("train", "test"):
        cache = prepared.image_cache(split, 32)
        assert cache is not None and cache.dtype == np.uint8
        assert prepared.image_cache(split, 64) is None
        for i, path in enumerate(prepared.image_paths(split)):
            assert torch.equal(
                load_image(path, 32), torch.from_numpy(np.array(cache[i])).permute(2, 0, 1)
            )


def test_image_dataset_reads_cache_or_files_identically(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    items = prepared.split("test")
    cached = ImageDataset(items, prepared.root, 32, cache=prepared.image_cache("test", 32))
    decoded = ImageDataset(prepared.image_paths("test"), None, 32)
    assert len(cached) == len(decoded) == len(items)
    for i in range(len(items)):
        a, b = cached[i], decoded[i]
        assert a["index"] == b["index"] == i
        assert a["image"].dtype == torch.uint8 and torch.equal(a["image"], b["image"])
    with pytest.raises(ValueError, match="does not fit"):
        ImageDataset(items[:3], prepared.root, 32, cache=prepared.image_cache("test", 32))


def test_corrupt_cache_file_is_a_data_error(tiny_prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, copy)
    np.save(copy / "cache_test_32.npy", np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"cache_test_32\.npy: image cache has shape"):
        load_prepared(copy).image_cache("test", 32)


# --- prepared folder errors ------------------------------------------------------------------


def test_load_prepared_errors_name_the_file(tiny_prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepared folder not found"):
        load_prepared(tmp_path / "nothing")
    copy = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, copy)
    with (copy / "test.tsv").open("a", encoding="utf-8") as handle:
        handle.write("women/extra.jpeg\tblack jeans\n")
    with pytest.raises(DataError, match=r"test\.tsv: holds .* manifest\.json says"):
        load_prepared(copy)
    shutil.copy(tiny_prepared / "test.tsv", copy / "test.tsv")
    (copy / "test_queries.txt").write_text("women/unknown.jpeg women/other.jpeg\n", "utf-8")
    with pytest.raises(DataError, match=r"test_queries\.txt:1: image women/unknown\.jpeg"):
        load_prepared(copy)
    shutil.copy(tiny_prepared / "test_queries.txt", copy / "test_queries.txt")
    (copy / "vocab.json").unlink()
    with pytest.raises(DataError, match=r"vocab\.json"):
        load_prepared(copy)
    (copy / "manifest.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(DataError, match=r"manifest\.json: unreadable manifest \("):
        load_prepared(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"manifest\.json: missing"):
        load_prepared(copy)


def test_load_prepared_finds_a_moved_catalogue(tiny_catalogue_copy: Path, tmp_path: Path) -> None:
    prepare(data_config(tiny_catalogue_copy))
    moved = tmp_path / "moved"
    tiny_catalogue_copy.rename(moved)
    prepared = load_prepared(moved / "prepared" / "pants")
    assert prepared.root == moved.resolve()
    assert load_image(prepared.image_paths("test")[0], 8).shape == (3, 8, 8)


# --- pair dataset ----------------------------------------------------------------------------


def pair_dataset(prepared_dir: Path, **kwargs: Any) -> PairDataset:
    return PairDataset(load_prepared(prepared_dir), "train", 32, TEMPLATE, **{"seed": 0, **kwargs})


def same_items(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_pairs_are_siblings_with_the_right_text(tiny_prepared: Path) -> None:
    dataset = pair_dataset(tiny_prepared)
    train = load_prepared(tiny_prepared).split("train")
    assert len(dataset) == len(dataset.index.usable_sources()) > 0
    for i in range(len(dataset)):
        item = dataset[i]
        s, t = item["source_index"], item["target_index"]
        assert s == dataset.sources[i] and s != t
        assert item["text"] == modification_text(train[s].caption, train[t].caption, TEMPLATE)
        assert item["source"].shape == (3, 32, 32) and item["source"].dtype == torch.uint8


def test_pairs_depend_only_on_seed_epoch_and_index(tiny_prepared: Path) -> None:
    a, b = pair_dataset(tiny_prepared), pair_dataset(tiny_prepared)
    b.set_epoch(3)
    b.set_epoch(0)
    assert all(same_items(a[i], b[i]) for i in reversed(range(len(a))))
    epochs = []
    for epoch in range(4):
        a.set_epoch(epoch)
        epochs.append([a[i]["target_index"] for i in range(len(a))])
    assert any(e != epochs[0] for e in epochs[1:])
    other_seed = pair_dataset(tiny_prepared, seed=1)
    assert [other_seed[i]["target_index"] for i in range(len(a))] != epochs[0]


def test_pairs_are_the_same_with_or_without_workers_and_cache(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    cached = pair_dataset(tiny_prepared, cache=prepared.image_cache("train", 32))
    decoded = pair_dataset(tiny_prepared)
    collate = functools.partial(collate_pairs, vocab=prepared.vocab)
    batches = []
    for dataset, workers in ((cached, 0), (decoded, 2)):
        dataset.set_epoch(2)
        loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate)
        batches.append(list(loader))
    assert len(batches[0]) == len(batches[1])
    for x, y in zip(*batches, strict=True):
        assert same_items(x, y)


def test_datasets_pickle_a_memory_mapped_cache_by_file_name(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    cache = prepared.image_cache("train", 32)
    assert cache is not None
    dataset = pair_dataset(tiny_prepared, cache=cache)
    images = ImageDataset(prepared.split("train"), prepared.root, 32, cache=cache)
    for original in (dataset, images):
        payload = pickle.dumps(original)
        assert len(payload) < cache.nbytes / 4
        assert same_items(pickle.loads(payload)[1], original[1])


def test_collate_pairs_shapes_and_types(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    dataset = pair_dataset(tiny_prepared, hflip=True)
    batch = collate_pairs([dataset[i] for i in range(5)], prepared.vocab)
    assert batch["source"].shape == batch["target"].shape == (5, 3, 32, 32)
    assert batch["source"].dtype == torch.uint8
    assert batch["tokens"].dtype == torch.long and batch["tokens"].shape[0] == 5
    assert batch["lengths"].tolist() == [len(prepared.vocab.encode(t)) for t in batch["texts"]]
    assert batch["source_index"].dtype == batch["target_index"].dtype == torch.long
    assert all(t.startswith("change ") for t in batch["texts"])


def test_pairs_without_images_and_with_flips(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    bare = pair_dataset(tiny_prepared, with_images=False)
    assert "source" not in bare[0] and "target" not in bare[0]
    batch = collate_pairs([bare[i] for i in range(3)], prepared.vocab)
    assert "source" not in batch and batch["tokens"].shape[0] == 3
    flipped = pair_dataset(tiny_prepared, hflip=True)
    plain = pair_dataset(tiny_prepared)
    flips = 0
    for i in range(len(plain)):
        x, y = flipped[i]["source"], plain[i]["source"]
        assert torch.equal(x, y) or torch.equal(x, y.flip(-1))
        flips += not torch.equal(x, y)
    assert flips > 0


def test_bad_template_is_a_config_error(tiny_prepared: Path) -> None:
    prepared = load_prepared(tiny_prepared)
    with pytest.raises(ConfigError, match=r"data\.modification_template"):
        PairDataset(prepared, "train", 32, "change {source} to {tgt}", seed=0)
    with pytest.raises(DataError, match="unknown split"):
        prepared.split("valid")


def test_prepare_a_second_category_and_select_all(tmp_path: Path) -> None:
    from stylequery.synth import synthesize

    root = tmp_path / "two"
    synthesize(root, products=24, image_size=16, seed=3, categories=("pants", "skirt"))
    summary = prepare(data_config(root, categories=["all"]), out=tmp_path / "out")
    assert summary.subset == "all"
    prepared = load_prepared(summary.out)
    folders = {it.path.split("/")[1] for it in prepared.split("train")}
    assert folders == {"pants", "skirt"}
    wanted = sorted({label_lines(root, split)[0].split("/")[2] for split in ("train", "test")})
    subset = prepare(data_config(root, subcategories=wanted))
    assert subset.out == root / "prepared" / f"pants-{'+'.join(wanted)}"
    kept = load_prepared(subset.out).split("train") + load_prepared(subset.out).split("test")
    assert {it.path.split("/")[2] for it in kept} == set(wanted)
