"""`GET {ROOT_PATH}/openapi.json` and the docs page `GET {ROOT_PATH}/docs`: public, no key.

The page is FastAPI's Swagger UI page with its JavaScript and CSS served from here (the files
of the installed fastapi-offline package), so it works on a machine without Internet access;
Swagger UI's online validator badge is off for the same reason. The document is built from the
app's routes the first time it is asked for (services/edge/apidoc/build.py) and kept.
"""
from __future__ import annotations

from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, Response

from services.edge.errors import ApiError

router = APIRouter()

# The only files served from the package (no directory listing, no path to walk).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
TITLE = "gemini-cli gateway API"
_PUBLIC_CACHE = {"Cache-Control": "public, max-age=3600"}


def document_bytes(request: Request) -> bytes:
    app = request.app
    doc = getattr(app.state, "openapi_bytes", None)
    if doc is None:
        # The document's builder and its models are imported by the first request for it.
        from services.edge.apidoc.build import openapi

        root = app.state.root_path
        doc = orjson.dumps(openapi(app.routes, root, title=TITLE, version=app.version))
        app.state.openapi_bytes = doc
    return doc


async def openapi_json(request: Request) -> Response:
    return Response(document_bytes(request), media_type="application/json")


async def docs_page(request: Request) -> Response:
    root = request.app.state.root_path
    assets = f"{root}/docs/assets"
    return get_swagger_ui_html(openapi_url=f"{root}/openapi.json", title=TITLE,
                               swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                               swagger_css_url=f"{assets}/swagger-ui.css",
                               swagger_favicon_url=f"{assets}/favicon.png",
                               swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False})


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, f"no docs asset '{name[:80]}'")
    import fastapi_offline  # only to find its files: loaded by the first docs page

    static = Path(fastapi_offline.__file__).parent / "static"
    return FileResponse(static / name, media_type=media_type, headers=_PUBLIC_CACHE)


router.add_route("/openapi.json", openapi_json, methods=["GET"], name="openapi", include_in_schema=False)
router.add_route("/docs", docs_page, methods=["GET"], name="docs", include_in_schema=False)
router.add_route("/docs/assets/{name}", docs_asset, methods=["GET"], name="docs_asset", include_in_schema=False)
