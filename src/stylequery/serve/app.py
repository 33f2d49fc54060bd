"""The HTTP API and the page: routes over one shared :class:`~stylequery.inference.QueryEngine`.

Routes (JSON unless noted; errors are ``{"error": "<one line>"}``, never a traceback):

- ``GET /``: the page (``page/index.html``; its CSS and JS under ``/page/``).
- ``POST /api/query``: form fields ``image`` (file) or ``id`` (gallery row), ``changes`` (JSON
  list of ``{"from": w, "to": w}``) or ``text``, ``k``. The ``query --json`` schema, plus
  ``id`` on the source and on every result.
- ``GET /api/items/{id}``, ``GET /api/items/{id}/image?size=N`` (JPEG), ``GET /api/sample?n=N``.
- ``GET /api/vocab``, ``GET /api/health``. The framework's OpenAPI page is at ``/docs``.

Gallery items are addressed by row id only; paths in responses are relative to the gallery's
common folder, so no other path of the machine is shown.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from stylequery.errors import DataError, StyleQueryError
from stylequery.index import GalleryIndex
from stylequery.inference import QueryEngine
from stylequery.serve.images import DEFAULT_MAX_PIXELS, BadImageError, decode_upload, thumbnail_jpeg
from stylequery.serve.limits import BodySizeLimit

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).parent / "page"
MAX_K = 100


@dataclass(frozen=True)
class ServeSettings:
    """Limits of the server."""

    max_upload_bytes: int = 10 * 1024 * 1024  # larger request bodies are answered with 413
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images (width x height) are refused with 400


class Gallery:
    """Row ids of the engine's index as the client sees them: relative paths and captions."""

    def __init__(self, engine: QueryEngine) -> None:
        self.engine = engine
        common = _common_folder(engine.index)
        self._cut = len(common.rstrip("/")) + 1 if common else 0

    def __len__(self) -> int:
        return len(self.engine.index)

    def check(self, row: int) -> int:
        """``row``, or a 404 for a row outside the index."""
        if not 0 <= row < len(self):
            raise HTTPException(404, f"no gallery item {row} (ids are 0 to {len(self) - 1})")
        return row

    def relative(self, path: str) -> str:
        """A gallery path relative to the gallery's common folder."""
        return path[self._cut :]

    def path(self, row: int) -> Path:
        """The machine path of a row's image (never sent to the client)."""
        return Path(self.engine.index.items([row])[0][0])

    def describe(self, row: int) -> dict[str, Any]:
        """``{"id", "path", "caption"}`` of a row."""
        path, caption = self.engine.index.items([row])[0]
        return {"id": row, "path": self.relative(path), "caption": caption}


def _common_folder(index: GalleryIndex, chunk: int = 100_000) -> str:
    """The deepest folder holding every gallery path ("" when there is none)."""
    lows, highs = [], []
    for start in range(0, len(index), chunk):
        paths = [path for path, _ in index.items(range(start, min(start + chunk, len(index))))]
        lows.append(min(paths))
        highs.append(max(paths))
    if not lows:
        return ""
    # Every path lies between the smallest and the largest string, so shares their folders.
    folders = [os.path.dirname(min(lows)), os.path.dirname(max(highs))]
    return os.path.commonpath(folders) if all(folders) else ""


def create_app(engine: QueryEngine, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app answering queries with ``engine`` (shared by every request thread)."""
    settings = settings or ServeSettings()
    gallery = Gallery(engine)
    app = FastAPI(title="stylequery", summary="Composed image retrieval for fashion.")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)
    _add_error_handlers(app)
    _add_query_route(app, gallery, settings)
    _add_item_routes(app, gallery, settings)
    _add_info_routes(app, gallery)
    app.mount("/page", StaticFiles(directory=PAGE_DIR), name="page")
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("error answering %s %s", request.method, request.url.path)
        return _error(500, "internal server error (details are in the server's log)")


def parse_changes(raw: str | None) -> list[tuple[str, str]]:
    """``'[{"from": "black", "to": "green"}]'`` -> ``[("black", "green")]``, or a 400."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        items = None
    ok = isinstance(items, list) and all(
        isinstance(it, dict)
        and set(it) == {"from", "to"}
        and all(isinstance(v, str) and v.strip() for v in it.values())
        for it in items
    )
    if not ok:
        raise HTTPException(
            400, 'changes must be a JSON list like [{"from": "black", "to": "green"}]'
        )
    return [(it["from"].strip().lower(), it["to"].strip().lower()) for it in items]


def _decode_upload(upload: UploadFile, settings: ServeSettings, size: int) -> Image.Image:
    """The uploaded image, decoded within the limits, or a 413 or 400."""
    data = upload.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"the upload is larger than {settings.max_upload_bytes:,} bytes")
    try:
        return decode_upload(data, settings.max_pixels, size)
    except BadImageError as exc:
        raise HTTPException(400, f"upload: {exc}") from None


def _add_query_route(app: FastAPI, gallery: Gallery, settings: ServeSettings) -> None:
    engine = gallery.engine
    size = engine.loaded.encoding.image_size

    @app.post("/api/query")
    def query(
        image: Annotated[UploadFile | None, File(description="The source image.")] = None,
        id: Annotated[int | None, Form(description="Or: a gallery item as source.")] = None,
        changes: Annotated[str | None, Form(description='JSON: [{"from": w, "to": w}]')] = None,
        text: Annotated[str | None, Form(description="Or: free modification text.")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K, description="Number of results.")] = 10,
    ) -> dict[str, Any]:
        """Top-k gallery items for a source image plus changes in words."""
        pairs, text = parse_changes(changes), (text or "").strip() or None
        if not pairs and not text:
            raise HTTPException(400, "give at least one change or a text")
        source: Image.Image | int
        if id is not None and image is None:
            source = gallery.check(id)
        elif image is not None and id is None:
            source = _decode_upload(image, settings, size)
        else:
            raise HTTPException(400, "give exactly one source: an image upload or a gallery id")
        try:
            result = engine.query(source, pairs, text, k)
        except StyleQueryError as exc:
            if isinstance(exc, DataError) and id is not None:  # the gallery's own file
                logger.error("gallery item %d: %s", id, exc)  # its message names a machine path
                raise HTTPException(500, f"gallery item {id} cannot be read") from None
            raise HTTPException(400, str(exc)) from None
        return _result_json(gallery, result.to_json(), id)


def _result_json(gallery: Gallery, body: dict[str, Any], source_id: int | None) -> dict[str, Any]:
    """``query --json`` with row ids added and only gallery-relative paths."""
    index = gallery.engine.index
    body["id"] = source_id
    body["image"] = "upload" if source_id is None else gallery.relative(body["image"])
    for hit in body["results"]:
        hit["id"] = index.find(hit["path"])
        hit["path"] = gallery.relative(hit["path"])
    return body


def _add_item_routes(app: FastAPI, gallery: Gallery, settings: ServeSettings) -> None:
    @lru_cache(maxsize=512)
    def thumbnail(row: int, size: int) -> bytes:
        return thumbnail_jpeg(gallery.path(row), size, settings.max_pixels)

    @app.get("/api/items/{id}")
    def item(id: int) -> dict[str, Any]:
        """A gallery item's relative path and caption."""
        return gallery.describe(gallery.check(id))

    @app.get("/api/items/{id}/image", response_class=Response)
    def item_image(id: int, size: Annotated[int, Query(ge=16, le=1024)] = 256) -> Response:
        """A gallery image as a JPEG fitted into size x size."""
        try:
            data = thumbnail(gallery.check(id), size)
        except BadImageError as exc:
            logger.error("gallery item %d: %s", id, exc)
            raise HTTPException(500, f"gallery item {id} cannot be read") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/sample")
    def sample(
        n: Annotated[int, Query(ge=1, le=MAX_K)] = 12, seed: int | None = None
    ) -> dict[str, Any]:
        """A random sample of gallery items (to pick a source from)."""
        rows = random.Random(seed).sample(range(len(gallery)), min(n, len(gallery)))
        return {"items": [gallery.describe(row) for row in rows]}


def _add_info_routes(app: FastAPI, gallery: Gallery) -> None:
    engine = gallery.engine
    cfg = engine.loaded.cfg

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(PAGE_DIR / "index.html")

    @app.get("/api/vocab")
    def vocab() -> dict[str, Any]:
        """The words the model knows (for autocomplete) and the change template."""
        return {"words": engine.vocab.tokens[1:], "template": cfg.data.modification_template}

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Model, index size, device and checkpoint fingerprint."""
        return {
            "status": "ok",
            "model": {
                "composer": cfg.model.composer,
                "embed_dim": cfg.model.embed_dim,
                "image_size": cfg.data.image_size,
                "iteration": engine.loaded.iteration,
            },
            "index": {"size": len(gallery), "dim": engine.index.dim},
            "device": str(engine.device),
            "fingerprint": engine.loaded.fingerprint,
        }


def run(
    engine: QueryEngine,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight and return."""
    import uvicorn

    app = create_app(engine, settings)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
