"""Keep secrets and personal data out of everything the SDK shows.

Two kinds of sensitive text travel through the SDK: the shop secret (never shown, anywhere) and
member identifiers, which are phone numbers (shown masked: ``7999***1122``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import AnyStr
from urllib.parse import quote, quote_plus, unquote_to_bytes

from multidict import CIMultiDict

__all__ = [
    "identifier_repr",
    "mask_identifier",
    "mask_phones",
    "redact",
    "redact_escaped",
    "redact_headers",
    "secret_forms",
    "text_repr",
]

REDACTED = "***"

# A member identifier is a phone number written as digits, country code first (7XXXXXXXXXX).
# Masks any run of 10 to 15 digits so that numbers echoed inside server messages are hidden too.
_PHONE_RE = re.compile(r"(?<!\d)(\d{4})\d{2,7}(\d{4})(?!\d)")
# A phone number written with separators, as people write them: ``+7 999 000-11-22``,
# ``+7 (999) 000-11-22``, ``8-999-000-11-22``: a country code, a 3- or 4-digit area code (maybe
# in brackets), then 3, 2 and 2 digits, spaces, dashes or dots between.
_FORMATTED_PHONE_RE = re.compile(
    r"(?<![\w+])\+?\d{1,3}[ .-]?(?:\(\d{3,4}\)|\d{3,4})[ .-]?\d{3}[ .-]?\d{2}[ .-]?\d{2}(?!\d)"
)
# A JSON string token with at least one escape sequence (``\\u0073``, ``\\/``, ...). Scanned from
# the start of a JSON text it only ever matches whole string tokens (keys included): outside a
# string a quote is never followed by a backslash before the next quote.
_ESCAPED_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)+"', re.DOTALL)
# The query string of any URL: a GET request carries the secret and the member's phone there.
_QUERY_RE = re.compile(r"(https?://[^\s?#'\"<>]*)\?[^\s#'\"<>]*")


def mask_identifier(identifier: str | None) -> str | None:
    """Return *identifier* with its middle digits hidden: ``79990001122`` -> ``7999***1122``.

    Short or odd-looking identifiers are hidden whole, since their shape cannot be trusted.
    """
    if identifier is None:
        return None
    if len(identifier) >= 10:
        return f"{identifier[:4]}{REDACTED}{identifier[-4:]}"
    return REDACTED


def identifier_repr(identifier: str | None) -> str:
    """The repr of a masked identifier, for attrs ``field(repr=...)``."""
    return repr(mask_identifier(identifier))


def text_repr(text: str | None) -> str:
    """The repr of the server's free text, phones masked, for attrs ``field(repr=...)``."""
    return repr(None if text is None else mask_phones(text))


def mask_phones(text: str) -> str:
    """Mask every phone-number-like run of digits inside free *text*."""
    if any(ch in text for ch in " -.()"):
        text = _FORMATTED_PHONE_RE.sub(_mask_formatted, text)
    return _PHONE_RE.sub(rf"\1{REDACTED}\2", text)


def _mask_formatted(match: re.Match[str]) -> str:
    digits = "".join(ch for ch in match.group() if ch.isdigit())
    return f"{digits[:4]}{REDACTED}{digits[-4:]}"


@functools.lru_cache(maxsize=32)
def secret_forms(secret: str) -> tuple[str, ...]:
    """*secret* as it can appear in text: raw, percent-encoded (as in a URL) and JSON-escaped.

    Cached: every answer's headers are checked against them.
    """
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret, safe="/"),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
    }
    return tuple(sorted((form for form in forms if form), key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Cut URL query strings from *text*, replace every form of each secret, mask phones."""
    text = _QUERY_RE.sub(rf"\1?{REDACTED}", text)
    for secret in secrets:
        if secret:
            for form in secret_forms(secret):
                text = text.replace(form, REDACTED)
    return mask_phones(_redact_percent(text, secrets))


# A run of characters that may be one percent-encoded word: no space, quote or backslash (so a
# run never leaves a JSON string) and no angle bracket.
_RUN_RE = re.compile(r'[^\s"\\<>]+')
_RUN_RE_BYTES = re.compile(rb'[^\s"\\<>]+')


def _percent_hides(text: str | bytes, secrets: tuple[str, ...]) -> bool:
    """Whether *text*, percent-decoded (``+`` as a space too), holds one of the *secrets*."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if b"%" not in raw:
        return False
    decoded = unquote_to_bytes(raw)
    spaced = unquote_to_bytes(raw.replace(b"+", b" ")) if b"+" in raw else decoded
    return any(s and (s.encode() in decoded or s.encode() in spaced) for s in secrets)


def _redact_percent(text: AnyStr, secrets: tuple[str, ...]) -> AnyStr:
    """*text* with every run that percent-decodes to hold one of the *secrets* replaced.

    A server may percent-encode any character of the secret, in any case of hex digits, so the
    forms of :func:`secret_forms` cannot cover them all; each run holding a ``%`` is decoded.
    """
    if not _percent_hides(text, secrets):
        return text
    if isinstance(text, str):
        return _RUN_RE.sub(
            lambda m: REDACTED if _percent_hides(m.group(), secrets) else m.group(), text
        )
    return _RUN_RE_BYTES.sub(
        lambda m: REDACTED.encode() if _percent_hides(m.group(), secrets) else m.group(), text
    )


def redact_escaped(body: bytes, secrets: tuple[str, ...]) -> bytes:
    r"""*body* (a JSON answer, or any bytes) with the *secrets* cut out of its escaped strings.

    Percent-encoded runs that decode to hold a secret are cut out first.

    The raw forms of a secret are plain bytes, replaced by whoever holds them (the auth
    middleware); a server can also write any character of a JSON string as an escape
    (``\u0073``), so each string that holds an escape is decoded, and written back redacted if
    it holds a secret. Numbers and every other byte stay as they came, so the answer decodes
    to the same values.
    """
    body = _redact_percent(body, secrets)
    if b"\\" not in body or not _may_hide(body, secrets):
        return body

    def redact_token(match: re.Match[bytes]) -> bytes:
        token = match.group()
        try:
            text = json.loads(token)
        except ValueError:  # not a valid string token: left as it is
            return token
        if not isinstance(text, str) or not any(s and s in text for s in secrets):
            return token
        for secret in secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return json.dumps(text).encode()  # ASCII: lone surrogates stay escapes

    return _ESCAPED_STRING_RE.sub(redact_token, body)


# A JSON escape of a printable ASCII character (``\\u0041``), the only ones that can spell part
# of a printable ASCII secret; escapes of other characters (Cyrillic, say) are left alone.
_ASCII_ESCAPE_RE = re.compile(rb"\\u00([2-7][0-9a-fA-F])")


def _may_hide(body: bytes, secrets: tuple[str, ...]) -> bool:
    """Whether an escaped string of *body* may hold one of the *secrets*.

    ``False`` only when none can, which spares the decoding of each escaped string.
    For a printable ASCII secret without a backslash the check is exact: each escape that can
    stand for one of its characters is replaced by that character, every other escape stays
    at least one character that is not in the secret.
    """
    if not all(s.isascii() and s.isprintable() and "\\" not in s for s in secrets if s):
        return True
    text = body.replace(b"\\\\", b"\x00").replace(b"\\/", b"/").replace(b'\\"', b'"')
    text = _ASCII_ESCAPE_RE.sub(lambda match: bytes([int(match.group(1), 16)]), text)
    return any(secret.encode() in text for secret in secrets if secret)


def redact_headers(headers: Mapping[str, str], secrets: tuple[str, ...]) -> Mapping[str, str]:
    """*headers*, or a redacted copy of them if any value holds a form of the *secrets*."""
    forms = [form for secret in secrets if secret for form in secret_forms(secret)]
    if not any(
        any(form in value for form in forms) or _percent_hides(value, secrets)
        for value in headers.values()
    ):
        return headers
    return CIMultiDict((name, redact(value, secrets)) for name, value in headers.items())
