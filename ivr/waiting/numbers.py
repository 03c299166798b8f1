"""Callback numbers: which numbers the hotline calls back, in the national form it dials.

Spec (hotline.md v1.2): an Indonesian mobile number, written ``08…``, ``628…`` or
``+628…``, with 10 to 13 digits after the leading 0. Anything else (a landline, a foreign
or short number, letters) is refused, so the trunk is never asked to dial it.
"""
from __future__ import annotations

import re

_NATIONAL = re.compile(r"0(8\d{9,12})")
_INTERNATIONAL = re.compile(r"\+?62(8\d{9,12})")


def callback_number(raw: str | None) -> str | None:
    """The number in national form (``08…``), or None when it is not a valid one."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    for pattern in (_NATIONAL, _INTERNATIONAL):
        match = pattern.fullmatch(text)
        if match:
            return "0" + match.group(1)
    return None
