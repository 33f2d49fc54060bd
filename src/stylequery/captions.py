"""Captions and how they relate: normalisation, sibling captions, modification texts.

Two captions are *siblings* when they have the same number of words and differ in exactly one
position; a training pair or test query goes from an image of one caption to an image of a
sibling, described by a modification text such as "change black to blue".

Siblings are found in time linear in the total number of words: each caption is filed under
one key per word position (the caption with that word blanked out), and captions sharing a key
are siblings of each other. No pairwise comparison is ever made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stylequery.errors import ConfigError, DataError

_MARKS = ((".", "dotmark"), ("?", "questionmark"), ("&", "andmark"), ("*", "starmark"))


def normalize_caption(raw: str) -> str:
    """Normalise a raw caption the way the reference code does, plus whitespace collapsing.

    ``. ? & *`` become ``dotmark questionmark andmark starmark`` by literal replacement
    (``"7.5"`` -> ``"7dotmark5"``). Any Unicode text is accepted unchanged otherwise.

    Args:
        raw: The caption as read from a label file.

    Returns:
        The caption whose equality defines "same caption".
    """
    text = raw.strip()
    for mark, word in _MARKS:
        text = text.replace(mark, word)
    return " ".join(text.split())


def fill_template(template: str, src: str, tgt: str) -> str:
    """Fill a modification template such as ``"change {src} to {tgt}"``.

    Raises:
        ConfigError: The template has a field other than ``{src}`` and ``{tgt}``.
    """
    try:
        return template.format(src=src, tgt=tgt)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"config key 'data.modification_template': {template!r} is not a valid template "
            f"with {{src}} and {{tgt}} ({exc!r})"
        ) from None


def caption_difference(source: str, target: str) -> tuple[str, str]:
    """The one word that differs between two sibling captions, as ``(src, tgt)``.

    Raises:
        DataError: The captions are not siblings.
    """
    a, b = source.split(), target.split()
    diffs = [(x, y) for x, y in zip(a, b, strict=False) if x != y]
    if len(a) != len(b) or len(diffs) != 1:
        raise DataError(f"captions are not siblings: {source!r} and {target!r}")
    return diffs[0]


def is_sibling(source: str, target: str) -> bool:
    """Whether two normalised captions have equal length and differ in exactly one word."""
    a, b = source.split(), target.split()
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1


@dataclass
class SiblingIndex:
    """Captions of one split, the images of each, and which captions are siblings.

    Attributes:
        captions: Unique captions, in order of first appearance (the caption ids).
        labels: (N,) caption id of each image of the split.
        images: Image indices of each caption id, in split order.
        groups: Caption ids sharing one blanked-word key; only groups of two or more.
        caption_groups: Ids of the groups each caption belongs to.
    """

    captions: list[str]
    labels: np.ndarray
    images: list[list[int]]
    groups: list[list[int]]
    caption_groups: list[list[int]]

    @classmethod
    def build(cls, item_captions: Sequence[str]) -> SiblingIndex:
        """Index the (normalised) caption of every image of a split."""
        ids: dict[str, int] = {}
        labels = np.empty(len(item_captions), dtype=np.int64)
        images: list[list[int]] = []
        for i, caption in enumerate(item_captions):
            cid = ids.setdefault(caption, len(ids))
            if cid == len(images):
                images.append([])
            images[cid].append(i)
            labels[i] = cid
        captions = list(ids)
        keyed: dict[str, list[int]] = {}
        for cid, caption in enumerate(captions):
            words = caption.split()
            for p in range(len(words)):
                # \x1f never occurs inside a word (str.split treats it as whitespace), so the
                # key fixes both the words before and after the blank, hence the length too.
                key = " ".join(words[:p]) + "\x1f" + " ".join(words[p + 1 :])
                keyed.setdefault(key, []).append(cid)
        groups = [members for members in keyed.values() if len(members) > 1]
        caption_groups: list[list[int]] = [[] for _ in captions]
        for gid, members in enumerate(groups):
            for cid in members:
                caption_groups[cid].append(gid)
        return cls(captions, labels, images, groups, caption_groups)

    def siblings(self, caption_id: int) -> list[int]:
        """Sorted ids of the sibling captions of ``caption_id``."""
        found = [c for g in self.caption_groups[caption_id] for c in self.groups[g]]
        return sorted(c for c in found if c != caption_id)

    def num_siblings(self, caption_id: int) -> int:
        """Number of sibling captions (each sibling is in exactly one shared group)."""
        return sum(len(self.groups[g]) - 1 for g in self.caption_groups[caption_id])

    def usable_sources(self) -> list[int]:
        """Indices of the images whose caption has at least one sibling, in split order."""
        return [i for i, cid in enumerate(self.labels.tolist()) if self.caption_groups[cid]]

    def sample_sibling(self, caption_id: int, rng: np.random.Generator) -> int:
        """A sibling caption id drawn uniformly; the caption must have siblings."""
        pick = int(rng.integers(self.num_siblings(caption_id)))
        for g in self.caption_groups[caption_id]:
            others = [c for c in self.groups[g] if c != caption_id]
            if pick < len(others):
                return others[pick]
            pick -= len(others)
        raise ValueError(f"caption {caption_id} has no siblings")

    def sample_target(self, source: int, rng: np.random.Generator) -> int:
        """A random image of a random sibling caption of image ``source``."""
        caption_id = self.sample_sibling(int(self.labels[source]), rng)
        candidates = self.images[caption_id]
        return candidates[int(rng.integers(len(candidates)))]

    def modification(self, source: int, target: int, template: str) -> str:
        """Modification text taking image ``source``'s caption to image ``target``'s."""
        src, tgt = caption_difference(
            self.captions[self.labels[source]], self.captions[self.labels[target]]
        )
        return fill_template(template, src, tgt)


def sample_queries(index: SiblingIndex, seed: int) -> list[tuple[int, int]]:
    """One test query per image that has a sibling caption, deterministic in ``seed``.

    Args:
        index: Sibling index of the test split.
        seed: Seed of the random choices (target caption, then target image).

    Returns:
        ``(source, target)`` image indices, sources in split order.
    """
    rng = np.random.default_rng(seed_entropy(seed))
    return [(i, index.sample_target(i, rng)) for i in index.usable_sources()]


def every_query(index: SiblingIndex) -> list[tuple[int, int]]:
    """Every ``(source, sibling caption)`` pair of a split once, as ``(source, target)`` image
    indices: the target is the first image of the sibling caption (a hit is any image of it)."""
    return [
        (i, index.images[c][0])
        for i in index.usable_sources()
        for c in index.siblings(int(index.labels[i]))
    ]


def seed_entropy(*values: int) -> list[int]:
    """Non-negative entropy for ``np.random.default_rng`` from any ints (seeds may be < 0)."""
    return [v % 2**63 for v in values]
