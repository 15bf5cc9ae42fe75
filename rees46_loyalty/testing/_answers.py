"""Answers for a ``transport=`` function: the API's JSON, without a server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._http import ApiResponse
from .._serialization import dumps

__all__ = ["json_response"]

_JSON = {"Content-Type": "application/json"}


def json_response(
    document: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> ApiResponse:
    """An HTTP answer whose body is *document* as JSON, as a ``transport=`` function returns it.

    *document* is the whole answer, envelope included, as the API sends it::

        json_response({"status": "success", "payload": {"order_id": "1001", ...}})
        json_response({"status": "error", "payload": {"message": "..."}}, status=400)

    ``Content-Type: application/json`` is added to *headers*.
    """
    return ApiResponse(status=status, headers={**_JSON, **(headers or {})}, body=dumps(document))
