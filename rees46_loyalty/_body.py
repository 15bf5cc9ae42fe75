"""Reading an answer's body with a limit on its size.

aiohttp reads whatever a server sends: a 1 GiB answer, an endless chunked stream or a small
gzip bomb that decompresses to gigabytes would all be held in memory. Here a declared
``Content-Length`` over the limit is refused before anything is read, and the body is read in
chunks (after decompression, which aiohttp does as it reads) and counted, so that no more than
the limit plus one chunk is ever held.
"""

from __future__ import annotations

import aiohttp

__all__ = ["AnswerTooLarge", "read_body"]

_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):  # noqa: N818 - internal, turned into MalformedResponseError
    """An answer's body is larger than the client's limit (raised before reading it all)."""

    def __init__(self, status: int, limit: int, *, declared: int | None = None) -> None:
        self.status = status
        self.limit = limit
        self.declared = declared
        size = "more" if declared is None else f"{declared} bytes, more"
        super().__init__(f"the HTTP {status} answer is {size} than the limit of {limit} bytes")


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of *response*, decompressed; :class:`AnswerTooLarge` past *limit* bytes.

    The connection of a refused answer is closed, never reused with the rest of it unread.
    """
    declared = response.content_length
    if declared is not None and declared > limit and not response.headers.get("Content-Encoding"):
        response.close()
        raise AnswerTooLarge(response.status, limit, declared=declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            response.close()
            raise AnswerTooLarge(response.status, limit)
        chunks.append(chunk)
    return b"".join(chunks)
