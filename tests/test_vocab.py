"""Vocabulary: tokenizer, ids, encode/decode, suggestions, save/load, padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stylequery.errors import DataError
from stylequery.vocab import UNK, Vocab, pad_batch, tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Black Wide-Leg Pants!", ["black", "wideleg", "pants"]),
        ("  blue   skinny\tjeans ", ["blue", "skinny", "jeans"]),
        ("women\u2019s stretch", ["womens", "stretch"]),
        ("women\u00e2\u20ac\u2122s cargo", ["womens", "cargo"]),
        ("zenko\u00ae jeans", ["zenko", "jeans"]),
        ("7dotmark5 bandmarkco", ["7dotmark5", "bandmarkco"]),
        ("", []),
        ("\u00ae \u2019", []),
    ],
)
def test_tokenize_keeps_ascii_lowercase_without_punctuation(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens
    assert Vocab.tokenize(text) == tokens


def test_ids_are_unk_then_sorted_unique_training_tokens() -> None:
    vocab = Vocab.build(["black skinny jeans", "Blue skinny jeans", "black cargo pants"])
    assert vocab.tokens == [UNK, "black", "blue", "cargo", "jeans", "pants", "skinny"]
    assert len(vocab) == 7
    assert vocab.encode("blue cargo jeans") == [2, 3, 4]
    assert vocab.decode([2, 3, 4]) == "blue cargo jeans"


def test_unknown_and_empty_texts_encode_to_unk() -> None:
    vocab = Vocab.build(["black jeans"])
    assert vocab.encode("green jeans") == [0, 2]
    assert vocab.encode("") == [0]
    assert vocab.encode("\u00ae!!") == [0]
    assert vocab.decode([0, 99, -1]) == f"{UNK} {UNK} {UNK}"


def test_vocab_from_its_own_tokens_is_equal() -> None:
    vocab = Vocab.build(["black jeans", "red pants"])
    assert Vocab(vocab.tokens) == vocab
    assert Vocab(reversed(vocab.tokens)) == vocab


def test_suggest_and_is_known() -> None:
    vocab = Vocab.build(["black jeans", "blue jeans", "beige pants"])
    assert vocab.suggest("blak")[0] == "black"
    assert vocab.suggest("zzzzzz") == []
    assert len(vocab.suggest("ble", n=1)) <= 1
    assert vocab.is_known("black")
    assert vocab.is_known("Black!")
    assert not vocab.is_known("green")
    assert not vocab.is_known("\u00ae")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocab.build(["women\u2019s black jeans", "blue jeans"])
    path = vocab.save(tmp_path / "vocab.json")
    assert Vocab.load(path) == vocab
    assert json.loads(path.read_text(encoding="utf-8"))["tokens"][0] == UNK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.json"]


def test_dict_survives_weights_only_torch_load(tmp_path: Path) -> None:
    vocab = Vocab.build(["black jeans"])
    torch.save({"vocab": vocab.to_dict()}, tmp_path / "v.pt")
    loaded = torch.load(tmp_path / "v.pt", weights_only=True)
    assert Vocab.from_dict(loaded["vocab"]) == vocab


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"tokens": [UNK, "a"]}),
        json.dumps({"format": "stylequery-vocab", "tokens": ["a", UNK]}),
        json.dumps({"format": "stylequery-vocab", "tokens": [UNK, "b", "a"]}),
        json.dumps({"format": "stylequery-vocab", "tokens": [UNK, "a", "a"]}),
    ],
)
def test_bad_vocab_file_is_a_data_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"vocab\.json"):
        Vocab.load(path)


def test_missing_vocab_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"gone\.json"):
        Vocab.load(tmp_path / "gone.json")


def test_pad_batch_pads_with_zero() -> None:
    tokens, lengths = pad_batch([[3, 1, 2], [5], [4, 4]])
    assert tokens.dtype == torch.long and lengths.dtype == torch.long
    assert tokens.tolist() == [[3, 1, 2], [5, 0, 0], [4, 4, 0]]
    assert lengths.tolist() == [3, 1, 2]


def test_pad_batch_of_nothing() -> None:
    tokens, lengths = pad_batch([])
    assert tokens.shape == (0, 1) and lengths.shape == (0,)
