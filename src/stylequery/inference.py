"""Using a trained model: ``embed`` a gallery into an index, ``query`` it with an image + change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from stylequery.checkpoint import LoadedModel, load_model
from stylequery.data import load_image, load_prepared
from stylequery.encode import encode_images
from stylequery.errors import DataError, StyleQueryError
from stylequery.fileio import exclusive_lock
from stylequery.index import Gallery, build_index, index_exists, open_index
from stylequery.index.batching import SearchBatcher
from stylequery.progress import progress_bar
from stylequery.runtime import resolve_device
from stylequery.vocab import Vocab, pad_batch, tokenize_words

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
QuerySource = Path | str | Image.Image | int  # image file, upload, or gallery row id


@dataclass
class EmbedSummary:
    """What ``embed`` did."""

    index_dir: Path
    added: int
    total: int
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable images
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


class _GalleryImages(Dataset[dict[str, Any]]):
    """Images by path; an unreadable one yields ``image=None`` and its reason, never an error."""

    def __init__(self, paths: list[Path], image_size: int, max_pixels: int) -> None:
        self.paths, self.image_size, self.max_pixels = paths, image_size, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = load_image(self.paths[i], self.image_size, self.max_pixels)
            return {"image": image, "index": i, "error": ""}
        except (DataError, OSError) as exc:
            return {"image": None, "index": i, "error": str(exc)}


def _collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    good = [b for b in batch if b["image"] is not None]
    return {
        "images": torch.stack([b["image"] for b in good]) if good else None,
        "indices": [b["index"] for b in good],
        "errors": [(b["index"], b["error"]) for b in batch if b["image"] is None],
    }


def gallery_source(source: Path, split: str) -> tuple[list[Path], list[str | None]]:
    """Image paths and captions of a prepared split, or of every image under a folder."""
    source = Path(source)
    if (source / "manifest.json").is_file():
        prepared = load_prepared(source)
        items = prepared.split(split)
        return [prepared.root / it.path for it in items], [it.caption for it in items]
    if source.is_dir():
        paths = image_paths([source])
        return paths, [None] * len(paths)
    raise DataError(f"{source}: not a prepared folder (no manifest.json) nor a folder of images")


def image_paths(sources: Sequence[Path | str]) -> list[Path]:
    """Image files from a list of files and folders: a file as given, a folder's .jpg, .jpeg,
    .png and .webp images (recursive, sorted), in the order of ``sources``."""
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_file():
            paths.append(source)
        elif source.is_dir():
            found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{source}: no .jpg, .jpeg, .png or .webp images found (recursive)")
            paths += found
        else:
            raise DataError(f"{source}: no such image file or folder")
    return paths


@torch.no_grad()
def embed(
    checkpoint: Path,
    source: Path,
    out: Path,
    device: torch.device | str = "auto",
    split: str = "test",
    append: bool = False,
    batch_size: int = 64,
    num_workers: int = 2,
    dtype: Literal["float32", "float16"] = "float32",
    backend: str = "exact",
    params: dict[str, Any] | None = None,
) -> EmbedSummary:
    """Encode a gallery (prepared split or image folder) into an index at ``out``.

    With ``append`` the images already in the index at ``out`` (of whatever backend) are kept,
    not re-encoded; otherwise a new ``backend`` index is built with ``params`` (see
    :func:`stylequery.index.build_index`). Unreadable images are skipped and listed in the
    summary. The index's write lock is held from reading the old index to writing the new one,
    so concurrent runs take turns.

    Raises:
        LockError: Another process kept the index locked for longer than the lock timeout.
    """
    start, device = time.perf_counter(), resolve_device(device)
    loaded = load_model(checkpoint, device)
    paths, captions = gallery_source(source, split)
    with exclusive_lock(out):  # a concurrent embed into `out` waits: no append is lost
        old = open_index(out) if append and index_exists(out) else None
        if old is not None:
            old.check_fingerprint(loaded.fingerprint)
            keep = [i for i, p in enumerate(paths) if str(p.resolve()) not in old]
            paths, captions = [paths[i] for i in keep], [captions[i] for i in keep]
        embeddings, good, skipped = _encode_paths(loaded, paths, device, batch_size, num_workers)
        new_paths = [str(paths[i].resolve()) for i in good]
        new_captions = [captions[i] for i in good]
        if old is not None:
            index = old.add(embeddings, new_paths, new_captions) if good else old
        else:
            if not good:
                raise DataError(f"{source}: none of the {len(paths)} images could be read")
            meta = {"checkpoint": str(checkpoint), "source": str(source), "split": split}
            rows = Gallery.of(embeddings, new_paths, new_captions, loaded.fingerprint, dtype, meta)
            index = build_index(backend, out, rows, **(params or {}))
        total = len(index)
        index.close()
    for path, reason in skipped:
        logger.warning("skipped %s: %s", path, reason)
    return EmbedSummary(out, len(good), total, skipped, time.perf_counter() - start)


def _encode_paths(
    loaded: LoadedModel, paths: list[Path], device: torch.device, batch_size: int, workers: int
) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """Normalised embeddings of the readable images, their positions, and the skipped ones."""
    loader = DataLoader(
        _GalleryImages(paths, loaded.encoding.image_size, loaded.cfg.data.max_image_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    chunks, good, skipped = [], [], []
    with progress_bar("embed", total=len(paths), log_every=30) as bar:
        for batch in loader:
            skipped += [(str(paths[i]), reason) for i, reason in batch["errors"]]
            if batch["images"] is not None:
                emb = encode_images(loaded.model, batch["images"], loaded.encoding, device)
                chunks.append(emb.cpu())  # (B, D)
                good += batch["indices"]
            bar.advance(len(batch["indices"]) + len(batch["errors"]))
    dim = loaded.cfg.model.embed_dim
    return (torch.cat(chunks) if chunks else torch.empty(0, dim)), good, skipped


def parse_change(spec: str) -> tuple[str, str]:
    """``"black:green"`` -> ``("black", "green")``."""
    src, sep, tgt = spec.partition(":")
    if not sep or not src.strip() or not tgt.strip() or ":" in tgt:
        raise StyleQueryError(f"change {spec!r} must be FROM:TO, e.g. black:green")
    return src.strip().lower(), tgt.strip().lower()


@dataclass
class QueryHit:
    rank: int
    score: float
    path: str
    caption: str | None
    hit: bool | None  # caption equals the target caption; None when that is unknown


@dataclass
class QueryResult:
    image: Path
    texts: list[str]
    hits: list[QueryHit]
    source_caption: str | None
    target_caption: str | None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "texts": self.texts,
            "source_caption": self.source_caption,
            "target_caption": self.target_caption,
            "warnings": self.warnings,
            "results": [vars(h) for h in self.hits],
        }


class QueryEngine:
    """A checkpoint and an index loaded once, answering queries (the warm path).

    Safe to share between threads: encoding is serialised by a lock (one forward pass at a time
    on the shared weights), searches of the read-only index run in parallel.
    """

    def __init__(
        self,
        checkpoint: Path,
        index_dir: Path | str,
        device: torch.device | str = "auto",
        search_params: dict[str, Any] | None = None,
    ) -> None:
        """Load the checkpoint (or export folder) and open the index (any backend;
        ``search_params`` tune it)."""
        self.device = resolve_device(device)
        self.loaded = load_model(checkpoint, self.device)
        self.index = open_index(index_dir, **(search_params or {}))
        self.index.check_fingerprint(self.loaded.fingerprint)
        self.searcher = SearchBatcher(self.index)  # concurrent queries share one search
        self.vocab = Vocab(self.loaded.vocab)
        self._encode_lock = threading.Lock()

    def texts_for(self, changes: list[tuple[str, str]], text: str | None) -> list[str]:
        """Modification texts: one per change (in the training template), or the free text."""
        template = self.loaded.cfg.data.modification_template
        if text:
            return [text]
        if not changes:
            raise StyleQueryError("give at least one FROM:TO change or a modification text")
        return [template.format(src=src, tgt=tgt) for src, tgt in changes]

    def unknown_word_warnings(self, texts: list[str]) -> list[str]:
        """A warning, with the nearest known words, for each word the vocabulary lacks.

        The template's own words ("change", "to") are left out: the vocabulary holds caption
        words, so they were <UNK> in training too.
        """
        template = self.loaded.cfg.data.modification_template
        ignored = set(self.vocab.tokenize(template.format(src="", tgt="")))
        warnings = []
        for word in sorted({w for t in texts for w in self.vocab.tokenize(t)} - ignored):
            if not self.vocab.is_known(word):
                close = self.vocab.suggest(word)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                warnings.append(f"'{word}' is not in the vocabulary (read as <UNK>){hint}")
        return warnings

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embedding (1, D) of one uint8 image (3, S, S), encoded exactly as the gallery was."""
        return encode_images(
            self.loaded.model, image[None], self.loaded.encoding, self.device, normalize
        )

    @torch.no_grad()
    def encode(self, image: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Composed, normalised query (1, D): each text applied to the previous composition."""
        with self._encode_lock:
            query = self._compose(image, texts)  # (1, D)
        return F.normalize(query.float(), dim=-1).cpu()

    def _compose(self, image: torch.Tensor, texts: list[str]) -> torch.Tensor:
        model = self.loaded.model
        query = self.encode_image(image, normalize=False)  # (1, D)
        for step, text in enumerate(texts, start=1):
            tokens, lengths = pad_batch([self.vocab.encode(text)])
            words = model.encode_text(tokens.to(self.device), lengths.to(self.device))  # (1, D)
            query = model.compose(query, words, normalize=False)  # (1, D)
            if not torch.isfinite(query).all():  # each step can grow the raw norm
                raise StyleQueryError(
                    f"the composed query overflows at change {step} of {len(texts)}; "
                    "give fewer changes"
                )
        return query

    def query(
        self,
        source: QuerySource,
        changes: list[tuple[str, str]],
        text: str | None = None,
        k: int = 10,
        strict: bool = False,
    ) -> QueryResult:
        """Top-k gallery images for an image plus changes.

        Args:
            source: An image file, an opened image (an upload) or a gallery row id. The source
                itself is left out of the results when it is in the gallery.
            changes: FROM:TO word changes, applied in order through the training template.
            text: Free modification text instead of ``changes``.
            k: Number of results.
            strict: A word the tokenizer drops or alters is an error, not a warning.

        The result's texts are what the model saw.
        """
        texts, warnings = self.used_texts(self.texts_for(changes, text), strict)
        image, own, name = self.source_image(source)
        scores, ids = self.searcher.search(self.encode(image, texts).numpy(), k, own)
        source_caption = self.index.items([own])[0][1] if own >= 0 else None
        target = apply_changes(source_caption, changes) if source_caption and not text else None
        hits = []
        items = self.index.items(ids[0].tolist())
        for rank, (score, (path, caption)) in enumerate(
            zip(scores[0].tolist(), items, strict=True), start=1
        ):
            hit = None if target is None or caption is None else caption == target
            hits.append(QueryHit(rank, float(score), path, caption, hit))
        warnings += self.unknown_word_warnings(texts)
        return QueryResult(name, texts, hits, source_caption, target, warnings)

    @staticmethod
    def used_texts(texts: list[str], strict: bool = False) -> tuple[list[str], list[str]]:
        """The texts as tokenized (what the model sees) and a warning per altered word.

        Raises:
            DataError: ``strict`` and a word was dropped or altered.
        """
        used, warnings = [], []
        for text in texts:
            tokens, text_warnings = tokenize_words(text)
            used.append(tokens)
            warnings += [w for w in text_warnings if w not in warnings]
        if strict and warnings:
            raise DataError("; ".join(warnings))
        return used, warnings

    def source_image(self, source: QuerySource) -> tuple[torch.Tensor, int, Path]:
        """Pixels (3, S, S), gallery row (-1 when not in it) and name of a query source.

        Args:
            source: An image file, an opened image (e.g. an upload), or a gallery row id.

        Raises:
            StyleQueryError: A row id outside the index, or an unreadable image.
        """
        size, limit = self.loaded.encoding.image_size, self.loaded.cfg.data.max_image_pixels
        if isinstance(source, (Path, str)):
            path = Path(source)
            return load_image(path, size, limit), self.index.find(str(path.resolve())), path
        if isinstance(source, Image.Image):
            name = Path(getattr(source, "filename", "") or "upload")
            return load_image(source, size, limit), -1, name
        if not 0 <= source < len(self.index) or isinstance(source, bool):
            raise StyleQueryError(
                f"gallery row {source} is out of range: the index holds {len(self.index)}"
            )
        path = Path(self.index.items([source])[0][0])
        return load_image(path, size, limit), source, path


def apply_changes(caption: str, changes: list[tuple[str, str]]) -> str | None:
    """The caption after replacing each FROM word by its TO word; None if a FROM word is absent."""
    words = caption.split()
    for src, tgt in changes:
        if src not in words:
            return None
        words[words.index(src)] = tgt
    return " ".join(words)
