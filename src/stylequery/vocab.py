"""Caption vocabulary: tokenize, build from training captions, encode, save and load.

Tokenization follows the TIRG reference: keep ASCII characters only, lowercase, drop
punctuation, split on whitespace. Id 0 is ``<UNK>`` (also the padding id), then the sorted
unique training tokens, so a vocabulary is fully described by its token list.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from stylequery.errors import DataError
from stylequery.fileio import read_json, write_json

UNK = "<UNK>"
VOCAB_FORMAT = "stylequery-vocab"
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def tokenize(text: str) -> list[str]:
    r"""Split text into vocabulary tokens: ASCII only, lowercase, no punctuation.

    Args:
        text: A caption or modification text, any Unicode.

    Returns:
        The tokens; non-ASCII characters are dropped, so ``"women\u2019s"`` gives ``["womens"]``.
    """
    ascii_text = text.encode("ascii", "ignore").decode("ascii")
    return ascii_text.lower().translate(_DROP_PUNCTUATION).split()


def tokenize_words(text: str) -> tuple[str, list[str]]:
    """What the tokenizer makes of ``text``, and a warning for each word it drops or alters.

    Case does not count as a change (tokens are lowercase by design); anything else does:
    ``"红色"`` is dropped (non-ASCII), ``"T-shirt"`` is read as ``"tshirt"``.

    Returns:
        ``(used, warnings)``: the tokens joined by spaces (what a model sees) and one line
        per word that did not survive as written.
    """
    warnings = []
    for word in text.split():
        tokens = tokenize(word)
        if not tokens:
            warnings.append(
                f"'{word}' was dropped: the tokenizer keeps only ASCII letters and digits"
            )
        elif " ".join(tokens) != word.lower():
            warnings.append(f"'{word}' was read as '{' '.join(tokens)}'")
    return " ".join(tokenize(text)), warnings


class Vocab:
    """Mapping between caption tokens and integer ids (0 is ``<UNK>``).

    Args:
        words: Known words (already tokenized), e.g. the ``tokens`` of another Vocab;
            ``<UNK>`` and duplicates are ignored and the rest is sorted.
    """

    def __init__(self, words: Iterable[str]) -> None:
        self._words = sorted(set(words) - {UNK})
        self._tokens = [UNK, *self._words]
        self._ids = {token: i for i, token in enumerate(self._tokens)}

    tokenize = staticmethod(tokenize)

    @classmethod
    def build(cls, texts: Iterable[str]) -> Vocab:
        """Vocabulary of every token in ``texts`` (the training captions)."""
        return cls(token for text in texts for token in tokenize(text))

    @property
    def tokens(self) -> list[str]:
        """All tokens by id, ``<UNK>`` first."""
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(tuple(self._tokens))

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; unknown tokens map to 0 and an empty text to ``[0]``."""
        ids = [self._ids.get(token, 0) for token in tokenize(text)]
        return ids or [0]

    def decode(self, ids: Sequence[int]) -> str:
        """Space-joined tokens of ``ids`` (out-of-range ids read as ``<UNK>``)."""
        n = len(self._tokens)
        return " ".join(self._tokens[i] if 0 <= i < n else UNK for i in ids)

    def is_known(self, word: str) -> bool:
        """Whether every token of ``word`` is in the vocabulary (and there is at least one)."""
        tokens = tokenize(word)
        return bool(tokens) and all(token in self._ids for token in tokens)

    def suggest(self, word: str, n: int = 3) -> list[str]:
        """Up to ``n`` known words closest to ``word`` (e.g. ``"blak"`` -> ``["black"]``)."""
        key = "".join(tokenize(word)) or word.lower()
        return difflib.get_close_matches(key, self._words, n=n, cutoff=0.6)

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed description (JSON and ``torch.load(weights_only=True)`` safe)."""
        return {"format": VOCAB_FORMAT, "version": 1, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "vocabulary") -> Vocab:
        """Rebuild from :meth:`to_dict` output; ``source`` names the origin in errors."""
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise DataError(f"{source}: not a stylequery vocabulary (format key missing)")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not tokens or tokens[0] != UNK:
            raise DataError(f"{source}: 'tokens' must be a list starting with {UNK}")
        if not all(isinstance(t, str) for t in tokens) or len(set(tokens)) != len(tokens):
            raise DataError(f"{source}: 'tokens' must be unique strings")
        vocab = cls(tokens[1:])
        if vocab.tokens != tokens:
            raise DataError(f"{source}: tokens after {UNK} must be sorted")
        return vocab

    def save(self, path: Path) -> Path:
        """Write the vocabulary as JSON, atomically."""
        return write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """Read a vocabulary written by :meth:`save`; a bad file raises DataError."""
        data = read_json(path, "vocabulary", DataError)
        return cls.from_dict(data, source=str(path))


def pad_batch(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id sequences with 0 into one tensor.

    Args:
        seqs: B sequences of token ids (each non-empty, as :meth:`Vocab.encode` returns).

    Returns:
        ``tokens`` (B, L) long, padded with 0, and ``lengths`` (B,) long.
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    max_len = max(1, int(lengths.max())) if len(seqs) else 1
    tokens = torch.zeros(len(seqs), max_len, dtype=torch.long)  # (B, L)
    for row, seq in enumerate(seqs):
        if len(seq):
            tokens[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return tokens, lengths
