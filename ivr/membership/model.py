"""What the IVR knows of a participant, parsed strictly from the service's JSON.

The name is deliberately not kept: the IVR never speaks it and has no use for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

STATUSES = ("AKTIF", "TIDAK_AKTIF")
INACTIVE_REASONS = ("TUNGGAKAN", "PENANGGUHAN", "NONAKTIF_PBI", "DATA_TIDAK_VALID",
                    "MENINGGAL", "LAINNYA")
SEGMENTS = ("PBI", "PPU", "PBPU", "BP")
PAYERS = ("PEMERINTAH", "PEMBERI_KERJA", "PESERTA")
CLASSES = (1, 2, 3)


class MembershipUnavailable(Exception):
    """The service failed: timeout, refused, 5xx, unexpected status or a bad body.
    Never "not found", never a data problem for the caller."""


@dataclass(frozen=True)
class Billing:
    payer: str
    monthly_premium: int
    family_members: int
    months_in_arrears: int
    amount_due: int
    due_date: date | None


@dataclass(frozen=True)
class Participant:
    card_number: str
    nik: str
    birth_date: date
    status: str
    inactive_reason: str | None
    segment: str
    member_class: int
    billing: Billing | None
    # Last 4 digits of the registered mobile number (contract v1.1), None when there is none
    phone_last4: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "AKTIF"


def _choice(body: dict, key: str, allowed: tuple) -> Any:
    value = body[key]
    if value not in allowed:
        raise ValueError(f"{key} has an unexpected value")
    return value


def _int(body: dict, key: str, minimum: int = 0) -> int:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} is not a whole number >= {minimum}")
    return value


def _digits(body: dict, key: str, length: int) -> str:
    value = body[key]
    if not (isinstance(value, str) and len(value) == length and value.isdigit()):
        raise ValueError(f"{key} is not {length} digits")
    return value


def _date(value: Any, key: str) -> date:
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a date")
    return date.fromisoformat(value)


def _phone_last4(value: Any) -> str | None:
    """v1.1: 4 digits, or null; a v1 server leaves the field out, which means null."""
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) == 4 and value.isascii()
            and value.isdigit()):
        raise ValueError("phone_last4 is not 4 digits")
    return value


def parse_participant(body: Any) -> Participant:
    """Parse a 200 body; raise ValueError (with no personal data in it) when it is not
    the contract's JSON."""
    if not isinstance(body, dict):
        raise ValueError("body is not an object")
    try:
        status = _choice(body, "status", STATUSES)
        reason = body.get("inactive_reason")
        if status == "AKTIF":
            reason = None
        elif reason not in INACTIVE_REASONS:
            reason = "LAINNYA"  # the contract: any other value is LAINNYA
        billing_body = body.get("billing")
        billing = None
        if billing_body is not None:
            if not isinstance(billing_body, dict):
                raise ValueError("billing is not an object")
            due = billing_body.get("due_date")
            billing = Billing(
                payer=_choice(billing_body, "payer", PAYERS),
                monthly_premium=_int(billing_body, "monthly_premium"),
                family_members=_int(billing_body, "family_members"),
                months_in_arrears=_int(billing_body, "months_in_arrears"),
                amount_due=_int(billing_body, "amount_due"),
                due_date=None if due is None else _date(due, "due_date"),
            )
        return Participant(
            card_number=_digits(body, "card_number", 13),
            nik=_digits(body, "nik", 16),
            birth_date=_date(body["birth_date"], "birth_date"),
            status=status,
            inactive_reason=reason,
            segment=_choice(body, "segment", SEGMENTS),
            member_class=_choice(body, "class", CLASSES),
            billing=billing,
            phone_last4=_phone_last4(body.get("phone_last4")),
        )
    except KeyError as missing:
        raise ValueError(f"missing field {missing}") from None
    except (TypeError, AttributeError):
        raise ValueError("malformed field") from None
