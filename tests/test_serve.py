"""The HTTP API in-process (FastAPI's TestClient): every route, bad input, concurrent clients."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from stylequery.inference import QueryEngine
from stylequery.serve.app import ServeSettings, create_app

LIMIT = 200_000  # a small upload limit, so the 413 test sends little


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path, tiny_index: Path) -> QueryEngine:
    return QueryEngine(tiny_checkpoint, tiny_index, torch.device("cpu"))


@pytest.fixture(scope="module")
def client(engine: QueryEngine, one_thread: None) -> Iterator[TestClient]:
    app = create_app(engine, ServeSettings(max_upload_bytes=LIMIT, max_pixels=1_000_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _png(width: int = 40, height: int = 30, colour: tuple[int, int, int] = (20, 40, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def _changes(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"from": a, "to": b} for a, b in pairs])


def _path(engine: QueryEngine, row: int) -> str:
    return engine.index.items([row])[0][0]


def _caption(engine: QueryEngine, row: int) -> str | None:
    return engine.index.items([row])[0][1]


def _a_change(engine: QueryEngine, row: int = 0) -> tuple[str, str]:
    """A change of the first word of a gallery caption into another known word."""
    word = (_caption(engine, row) or "").split()[0]
    other = next(w for w in engine.vocab.tokens[1:] if w != word)
    return word, other


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    message = body["error"]
    assert "\n" not in message and "Traceback" not in message
    return str(message)


def test_query_by_upload_matches_the_engine(client: TestClient, engine: QueryEngine) -> None:
    change = _a_change(engine)
    files = {"image": ("shoe.png", _png(), "image/png")}
    response = client.post("/api/query", files=files, data={"changes": _changes(change), "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = engine.query(Image.open(io.BytesIO(_png())), [change], None, 5)
    assert [h["id"] for h in body["results"]] == [engine.index.find(h.path) for h in expected.hits]
    assert [h["score"] for h in body["results"]] == pytest.approx([h.score for h in expected.hits])
    assert body["image"] == "upload" and body["id"] is None
    assert body["texts"] == expected.texts
    assert len(body["results"]) == 5


def test_query_by_id_leaves_the_source_out_and_knows_the_target(
    client: TestClient, engine: QueryEngine
) -> None:
    change = _a_change(engine, row=3)
    response = client.post("/api/query", data={"id": 3, "changes": _changes(change), "k": 100})
    body = response.json()
    assert response.status_code == 200, body
    ids = [hit["id"] for hit in body["results"]]
    assert 3 not in ids and len(ids) == len(engine.index) - 1
    assert body["source_caption"] == _caption(engine, 3)
    assert body["target_caption"] is not None
    assert all(isinstance(hit["hit"], bool) for hit in body["results"])


def test_free_text_and_several_changes(client: TestClient, engine: QueryEngine) -> None:
    words = engine.vocab.tokens[1:4]
    one = client.post("/api/query", data={"id": 0, "text": f"make it {words[0]}"}).json()
    assert one["texts"] == [f"make it {words[0]}"]
    pairs = [(words[0], words[1]), (words[1], words[2])]
    two = client.post("/api/query", data={"id": 0, "changes": _changes(*pairs)}).json()
    assert two["texts"] == [engine.texts_for([p], None)[0] for p in pairs]


def test_no_machine_path_in_responses(client: TestClient, engine: QueryEngine) -> None:
    body = client.post("/api/query", data={"id": 1, "changes": _changes(_a_change(engine, 1))})
    folder = str(Path(_path(engine, 0)).parents[3])
    assert folder not in body.text and str(Path.home()) not in body.text
    for hit in body.json()["results"]:
        assert not hit["path"].startswith("/")
        assert _path(engine, hit["id"]).endswith("/" + hit["path"])
    item = client.get("/api/items/1").json()
    assert item["caption"] == _caption(engine, 1)
    assert _path(engine, 1).endswith("/" + item["path"]) and not item["path"].startswith("/")


def test_unknown_words_are_warned_with_suggestions(client: TestClient, engine: QueryEngine) -> None:
    word = engine.vocab.tokens[1]
    typo = word[:-1] + ("x" if word[-1] != "x" else "y") + "q"
    body = client.post("/api/query", data={"id": 0, "changes": _changes((word, typo))}).json()
    assert any(typo in w and "not in the vocabulary" in w for w in body["warnings"])


def test_item_images_and_thumbnail_sizes(client: TestClient) -> None:
    response = client.get("/api/items/2/image", params={"size": 20})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) <= 20
    _error(client.get("/api/items/2/image", params={"size": 5000}), 422)


def test_sample_vocab_and_health(client: TestClient, engine: QueryEngine) -> None:
    items = client.get("/api/sample", params={"n": 5, "seed": 1}).json()["items"]
    assert len({it["id"] for it in items}) == 5
    assert items == client.get("/api/sample", params={"n": 5, "seed": 1}).json()["items"]
    vocab = client.get("/api/vocab").json()
    assert vocab["words"] == engine.vocab.tokens[1:]
    assert "{src}" in vocab["template"]
    health = client.get("/api/health").json()
    assert health["index"]["size"] == len(engine.index)
    assert health["fingerprint"] == engine.loaded.fingerprint
    assert health["device"] == "cpu" and health["status"] == "ok"


def test_page_and_its_assets_come_from_the_server(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/page/app.js", "/page/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert "http" not in page.text.replace('href="/docs"', "")  # nothing from another host
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/api/query", "/api/health"}


@pytest.mark.parametrize("route", ["/api/items/999", "/api/items/-1", "/api/items/999/image"])
def test_unknown_ids_are_404(client: TestClient, route: str) -> None:
    assert "999" in _error(client.get(route), 404) or "-1" in route


def test_query_with_unknown_id_is_404(client: TestClient) -> None:
    _error(client.post("/api/query", data={"id": 10_000, "changes": _changes(("a", "b"))}), 404)


def _truncated_png() -> bytes:
    return _png(400, 300)[:200]


def _bomb_png() -> bytes:
    """A valid PNG header claiming 20000 x 20000 pixels (400 megapixels)."""
    head = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + head
    ihdr = struct.pack(">I", len(head)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png()[33:]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"%PDF-1.4 this is not an image", "not an image"),
        (b"", "empty"),
        (_truncated_png(), "cannot decode"),
        (_bomb_png(), "limit"),
        (_png(2000, 1000), "limit"),  # 2 megapixels, over this server's 1 megapixel limit
    ],
    ids=["not-image", "empty", "truncated", "bomb", "too-many-pixels"],
)
def test_bad_uploads_are_400(client: TestClient, data: bytes, message: str) -> None:
    files = {"image": ("x.png", data, "image/png")}
    response = client.post("/api/query", files=files, data={"changes": _changes(("a", "b"))})
    assert message in _error(response, 400)


def test_oversized_upload_is_413(client: TestClient) -> None:
    files = {"image": ("big.png", b"\0" * (LIMIT + 100_000), "image/png")}
    response = client.post("/api/query", files=files, data={"changes": _changes(("a", "b"))})
    _error(response, 413)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"id": 0, "changes": _changes(("a", "b")), "k": 0}, 422, "k"),
        ({"id": 0, "changes": _changes(("a", "b")), "k": 101}, 422, "k"),
        ({"id": 0, "changes": _changes(("a", "b")), "k": "many"}, 422, "k"),
        ({"id": 0}, 400, "change"),
        ({"id": 0, "changes": "black:green"}, 400, "JSON"),
        ({"id": 0, "changes": '[{"from": "black"}]'}, 400, "JSON"),
        ({"changes": _changes(("a", "b"))}, 400, "source"),
    ],
    ids=["k-zero", "k-big", "k-text", "no-change", "changes-not-json", "change-no-to", "no-src"],
)
def test_bad_query_fields(
    client: TestClient, data: dict[str, Any], status: int, message: str
) -> None:
    assert message in _error(client.post("/api/query", data=data), status)


def test_upload_and_id_together_are_refused(client: TestClient) -> None:
    files = {"image": ("x.png", _png(), "image/png")}
    data = {"id": 0, "changes": _changes(("a", "b"))}
    assert "exactly one" in _error(client.post("/api/query", files=files, data=data), 400)


def test_concurrent_queries_equal_sequential_ones(client: TestClient, engine: QueryEngine) -> None:
    requests = []
    for row in range(min(len(engine.index), 12)):
        change = _a_change(engine, row)
        requests.append({"id": row, "changes": _changes(change), "k": 7})
        requests.append({"text": f"make it {change[1]}", "k": 3, "upload": row})

    def send(data: dict[str, Any]) -> dict[str, Any]:
        fields = {key: value for key, value in data.items() if key != "upload"}
        files = None
        if "upload" in data:
            colour = (10 * data["upload"], 100, 200 - 10 * data["upload"])
            files = {"image": ("x.png", _png(colour=colour), "image/png")}
        response = client.post("/api/query", data=fields, files=files)
        assert response.status_code == 200, response.text
        return dict(response.json())

    one_at_a_time = [send(r) for r in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(send, requests * 3))
    assert together == one_at_a_time * 3


def test_serve_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import stylequery.serve
    from stylequery.cli import app

    missing = {"stylequery_no_such_module": "uvicorn"}
    monkeypatch.setattr(stylequery.serve, "REQUIREMENTS", missing)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message == "error: serve needs uvicorn: pip install 'stylequery[serve]'"


def test_an_unreadable_gallery_file_is_500_without_its_path(
    tiny_checkpoint: Path, tiny_catalogue_copy: Path, tmp_path: Path
) -> None:
    from stylequery.inference import embed

    photos = tmp_path / "photos"
    shutil.copytree(tiny_catalogue_copy / "women", photos)
    index = embed(tiny_checkpoint, photos, tmp_path / "index", torch.device("cpu"), num_workers=0)
    engine = QueryEngine(tiny_checkpoint, index.index_dir, torch.device("cpu"))
    lost = Path(engine.index.items([2])[0][0])
    lost.unlink()
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        for response in (
            client.get("/api/items/2/image"),
            client.post("/api/query", data={"id": 2, "text": "make it red"}),
        ):
            message = _error(response, 500)
            assert "gallery item 2" in message and str(tmp_path) not in message


def test_chunked_upload_over_the_limit_is_413(client: TestClient) -> None:
    """A body sent without Content-Length is counted as it arrives and refused past the limit."""
    boundary = "stylequeryboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(2 * LIMIT // 16_384):
            yield b"\0" * 16_384
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/api/query",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in response.request.headers  # it really was chunked
    assert "limit" in _error(response, 413)
