"""The auth middleware: adds the shop's credentials to a request, as late as possible.

It is the innermost middleware, so the secret exists only between here and the socket: no other
middleware (the user's own included) and no log line sees it. GET methods carry the credentials
in the query string, so the request's ``secrets`` tells the transport what to redact from any
error text that quotes the URL.
"""

from __future__ import annotations

from .._http import ApiRequest, ApiResponse, Handler
from .._redact import REDACTED, redact_escaped, redact_headers, secret_forms
from .._serialization import dumps

__all__ = ["AuthMiddleware"]


class AuthMiddleware:
    """Injects ``shop_id`` and ``shop_secret`` (the JSON body of a POST, the query of a GET)."""

    __slots__ = ("_prefix", "_secret_forms", "_shop_id", "_shop_secret")

    def __init__(self, shop_id: str, shop_secret: str) -> None:
        self._shop_id = shop_id
        self._shop_secret = shop_secret
        # The credentials as the first members of a JSON object, to go before an encoded body.
        self._prefix = dumps({"shop_id": shop_id, "shop_secret": shop_secret})[:-1]
        self._secret_forms = tuple(form.encode() for form in secret_forms(shop_secret))

    def __repr__(self) -> str:
        return f"AuthMiddleware(shop_id={self._shop_id!r}, shop_secret='{REDACTED}')"

    def secret_in(self, encoded: bytes) -> bool:
        """Whether *encoded* (a request's arguments as JSON) holds a form of the secret."""
        return any(form in encoded for form in self._secret_forms)

    async def __call__(self, request: ApiRequest, call_next: Handler) -> ApiResponse:
        # No local variable here holds the secret: error trackers record the local variables of
        # every frame a traceback passes through, and a failed call passes through this one.
        response = await call_next(
            request.replace(
                data={**request.data, "shop_id": self._shop_id, "shop_secret": self._shop_secret},
                body=self._with_credentials(request.body),
                secrets=(*request.secrets, self._shop_secret),
            )
        )
        # An API or a proxy that echoes the request back would hand the secret to every
        # middleware, error message, hook and idempotency record above this one: it is cut out
        # of the body (raw, encoded or JSON-escaped) and of the headers an error may quote.
        body = response.body
        for form in self._secret_forms:
            if form in body:
                body = body.replace(form, REDACTED.encode())
        body = redact_escaped(body, (self._shop_secret,))
        headers = redact_headers(response.headers, (self._shop_secret,))
        if body is response.body and headers is response.headers:
            return response
        return response.replace(body=body, headers=headers)

    def _with_credentials(self, body: bytes | None) -> bytes | None:
        if body is None:
            return None
        # '{"shop_id":…,"shop_secret":…' + ',' + the body's own members
        return self._prefix + (b"}" if body == b"{}" else b"," + body[1:])
