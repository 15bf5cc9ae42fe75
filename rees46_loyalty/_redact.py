"""Keep secrets and personal data out of everything the SDK shows.

Two kinds of sensitive text travel through the SDK: the shop secret (never shown, anywhere) and
member identifiers, which are phone numbers (shown masked: ``7999***1122``).
"""

from __future__ import annotations

import re

__all__ = ["identifier_repr", "mask_identifier", "mask_phones", "redact"]

REDACTED = "***"

# A member identifier is a phone number written as digits, country code first (7XXXXXXXXXX).
# Masks any run of 10 to 15 digits so that numbers echoed inside server messages are hidden too.
_PHONE_RE = re.compile(r"(?<!\d)(\d{4})\d{2,7}(\d{4})(?!\d)")


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


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace each of *secrets* in *text* by ``***`` and mask phone numbers."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return mask_phones(text)
