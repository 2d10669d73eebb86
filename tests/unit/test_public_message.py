"""What a client is told about an upstream failure (services/edge/upstream_errors.public_message)."""
from __future__ import annotations

import grpc
import pytest

from services.edge.upstream_errors import public_message

C = grpc.StatusCode

CASES = [
    # (http status, grpc code, upstream detail, expected client message; None = the detail itself)
    (400, C.INVALID_ARGUMENT, "Invalid JSON payload received. Unknown name \"foo\"", None),
    (404, C.NOT_FOUND, "Publisher Model `projects/acme-prod-42/locations/europe-west4/publishers/google/models/"
     "gemini-x` was not found or your project does not have access to it.",
     "Publisher Model `projects/[project]/publishers/google/models/gemini-x` was not found or your project "
     "does not have access to it."),
    (400, C.INVALID_ARGUMENT, "Permission for sa-1@acme-prod.iam.gserviceaccount.com: bad field",
     "Permission for [account]: bad field"),
    (404, C.NOT_FOUND, "models/gemini-x is not found for API version v1beta", None),
    (403, C.PERMISSION_DENIED, "Permission denied on resource project acme-prod-42",
     "the gateway's backend account may not serve this request"),
    (500, C.INTERNAL, "/srv/app/handler.py crashed", "the gateway's backend failed to answer"),
    (429, C.RESOURCE_EXHAUSTED, "quota of project acme exceeded", "the gateway's backend is rate limited; retry later"),
]


@pytest.mark.parametrize("status,code,detail,expected", CASES)
def test_public_message(status: int, code: grpc.StatusCode, detail: str, expected: str | None) -> None:
    assert public_message(status, code, detail) == expected
