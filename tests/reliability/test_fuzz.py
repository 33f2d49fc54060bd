"""Property tests: arbitrary text through the text parsers raises only the project's own error.

Every parser of user or file text (label lines, captions, the tokenizer, query files, --change
specs, modification templates) either returns a well-formed result or raises a
:class:`StyleQueryError` subclass whose message is one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stylequery.captions import fill_template, normalize_caption
from stylequery.errors import StyleQueryError
from stylequery.inference import QueryEngine, parse_change
from stylequery.labels import parse_label_line, read_label_file, read_query_file
from stylequery.vocab import Vocab, tokenize, tokenize_words

# Text a person or a broken file could hold: any code point (surrogates aside), with the
# separators the formats use made frequent.
TEXT = st.text(
    st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from(["\t", " ", ":", "/", ".", "\n", "\r", "[", "]", "\x1c", "\u2028"]),
    ),
    max_size=60,
)
RAW = st.binary(max_size=200)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _one_line(error: StyleQueryError) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message


@FUZZ
@given(line=TEXT)
def test_label_line_parser(line: str) -> None:
    try:
        path, caption = parse_label_line(line, "labels/x.txt:7")
    except StyleQueryError as error:
        _one_line(error)
        assert str(error).startswith("labels/x.txt:7: ")
        return
    assert caption == normalize_caption(caption) and caption
    assert path and not path.startswith("/") and ".." not in path.split("/")


@FUZZ
@given(raw=TEXT)
def test_caption_normaliser_is_idempotent_and_single_line(raw: str) -> None:
    caption = normalize_caption(raw)
    assert normalize_caption(caption) == caption
    assert caption == caption.strip()
    assert not any(mark in caption for mark in ".?&*")


@FUZZ
@given(text=TEXT)
def test_tokenizer_gives_lowercase_ascii_tokens(text: str) -> None:
    tokens = tokenize(text)
    assert all(t and t.isascii() and t == t.lower() and not t.isspace() for t in tokens)
    used, warnings = tokenize_words(text)
    assert used == " ".join(tokens)
    assert all("\n" not in w or "\n" in text for w in warnings)
    ids = Vocab(tokens).encode(text)
    assert ids == [0] if not tokens else all(i > 0 for i in ids) and len(ids) == len(tokens)


@FUZZ
@given(spec=TEXT)
def test_change_parser(spec: str) -> None:
    try:
        src, tgt = parse_change(spec)
    except StyleQueryError as error:
        assert "FROM:TO" in str(error)
        _one_line(error)
        return
    assert src and tgt and ":" not in tgt
    assert f"{src}:{tgt}" == f"{src}:{tgt}".strip()


@FUZZ
@given(spec=TEXT, strict=st.booleans())
def test_used_texts_of_any_change(spec: str, strict: bool) -> None:
    try:
        used, warnings = QueryEngine.used_texts([spec], strict=strict)
    except StyleQueryError as error:
        assert strict
        assert str(error)
        return
    assert used == [" ".join(tokenize(spec))]
    assert not (strict and warnings)


@FUZZ
@given(template=TEXT, src=TEXT, tgt=TEXT)
def test_template_filling(template: str, src: str, tgt: str) -> None:
    try:
        text = fill_template(template, src, tgt)
    except StyleQueryError:
        return
    assert isinstance(text, str)


def _label_rows_ok(rows: list) -> bool:
    return all(row.caption and row.line >= 1 for row in rows)


def _queries_ok(queries: list) -> bool:
    return all(line >= 1 and source and target for line, source, target in queries)


@pytest.mark.parametrize(
    ("reader", "name", "ok"),
    [
        (read_label_file, "pants_train_detect_all.txt", _label_rows_ok),
        (read_query_file, "test_queries.txt", _queries_ok),
    ],
)
@FILES
@given(data=RAW)
def test_file_readers(
    reader: Callable[[Path], list],
    name: str,
    ok: Callable[[list], bool],
    data: bytes,
    tmp_path: Path,
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        result = reader(path)
    except StyleQueryError as error:
        assert str(error).startswith(str(path))
        _one_line(error)
        return
    assert ok(result)


@pytest.mark.parametrize(
    ("word", "used", "warning"),
    [
        ("black:红色", "black", "'红色' was dropped"),
        ("T-shirt", "tshirt", "'T-shirt' was read as 'tshirt'"),
        ("Black", "black", None),
        ("[/x]", "x", "'[/x]' was read as 'x'"),
    ],
)
def test_altered_words_are_reported(word: str, used: str, warning: str | None) -> None:
    text = word.replace(":", " ")
    got, warnings = tokenize_words(text)
    assert got == used
    assert warnings[0].startswith(warning) if warning else warnings == []
