"""``/docs``: the API described, in Swagger UI, served from this package under the dashboard's
Content-Security-Policy. FastAPI's own page loads an unpinned Swagger UI from a CDN, with an inline script,
on the dashboard's origin; this one loads nothing from elsewhere.

Swagger UI 5.35.0 (Apache-2.0, ``static/swagger-ui*``), from the npm package ``swagger-ui-dist``. To update:
``npm pack swagger-ui-dist@VERSION``, copy ``swagger-ui-bundle.js`` with its ``.LICENSE.txt``, ``LICENSE``
(as ``swagger-ui.LICENSE``), ``NOTICE`` (as ``swagger-ui.NOTICE``) and ``swagger-ui.css`` (less its last
line, the source map comment) into ``static/``, change the version here, and run tests/test_api_docs.py.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from convolens.server.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def api_docs(request: Request) -> Response:
    return render(request, "api_docs.html", openapi_url=request.app.openapi_url)
