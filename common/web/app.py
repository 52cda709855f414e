"""The FastAPI app of `clafed serve`: the access policy, the static files, the templates, and the
pages each role asked for, each contributed as a `Page` by the module that owns its data."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from common.web.access import Access

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


@dataclass(frozen=True)
class Page:
    """One section of the app: its routes, where its start page is, and its title in the menu."""

    router: APIRouter
    path: str
    title: str
    summary: str


def create_app(access: Access, pages: list[Page]) -> FastAPI:
    """The app with `pages` behind `access`; no API documentation routes (nothing to browse)."""
    app = FastAPI(title="clafed", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(access)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.pages = pages
    for page in pages:
        app.include_router(page.router)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return render(request, "index.html")

    return app


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A page from its template, with the menu of every section this server runs."""
    return templates.TemplateResponse(request, template, {"pages": request.app.state.pages, **context})


def page_data(value: Any) -> str:
    """JSON for a page's `data-` attribute (autoescaped by the template), read by its script."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB, RGBA or grey uint8 image encoded as PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("could not encode a PNG")
    return encoded.tobytes()


def png_data_url(image: np.ndarray) -> str:
    """`png_bytes` as a data: URL, for JSON answers the page shows as is."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def bad_request(message: str, status: int = 400) -> HTTPException:
    """An error the page shows to its user as is: it names the upload or case and what to do."""
    return HTTPException(status_code=status, detail=message)
