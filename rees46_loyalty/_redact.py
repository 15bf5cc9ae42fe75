"""Keep secrets and personal data out of everything the SDK shows.

Two kinds of sensitive text travel through the SDK: the shop secret (never shown, anywhere) and
member identifiers, which are phone numbers (shown masked: ``7999***1122``).
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, quote_plus

__all__ = ["identifier_repr", "mask_identifier", "mask_phones", "redact", "secret_forms"]

REDACTED = "***"

# A member identifier is a phone number written as digits, country code first (7XXXXXXXXXX).
# Masks any run of 10 to 15 digits so that numbers echoed inside server messages are hidden too.
_PHONE_RE = re.compile(r"(?<!\d)(\d{4})\d{2,7}(\d{4})(?!\d)")
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


def mask_phones(text: str) -> str:
    """Mask every phone-number-like run of digits inside free *text*."""
    return _PHONE_RE.sub(rf"\1{REDACTED}\2", text)


def secret_forms(secret: str) -> tuple[str, ...]:
    """*secret* as it can appear in text: raw, percent-encoded (as in a URL) and JSON-escaped."""
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
    return mask_phones(text)
