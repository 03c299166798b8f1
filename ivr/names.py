"""Every name the flow shares with the outside: prompt ids (keys of
``prompts/catalog.toml``), channel variables, outcomes and transfer reasons (the spec's
table in ``../shared/spec/hotline.md``)."""
from __future__ import annotations

from enum import StrEnum


class P(StrEnum):
    """Prompt ids used by the flow."""
    GREETING = "greeting"
    MAIN_MENU = "main-menu"
    CHOICE_UNAVAILABLE = "choice-unavailable"
    ENTER_ID = "enter-id"
    ID_INVALID = "id-invalid"
    READBACK_CARD = "readback-card"
    READBACK_NIK = "readback-nik"
    CONFIRM_ID = "confirm-id"
    ENTER_BIRTH_DATE = "enter-birth-date"
    BIRTH_DATE_INVALID = "birth-date-invalid"
    ENTER_PHONE_LAST4 = "enter-phone-last4"
    PHONE_INVALID = "phone-invalid"
    NIK_NEEDS_CARD = "nik-needs-card"
    PLEASE_WAIT = "please-wait"
    PLEASE_WAIT_SHORT = "please-wait-short"
    DATA_MISMATCH = "data-mismatch"
    SERVICE_UNAVAILABLE = "service-unavailable"
    LOCKED = "locked"
    TRANSFER_AGENT = "transfer-agent"
    STATUS_ACTIVE = "status-active"
    STATUS_INACTIVE = "status-inactive"
    REASON_ARREARS = "reason-arrears"
    REASON_SUSPENDED = "reason-suspended"
    REASON_PBI_REMOVED = "reason-pbi-removed"
    REASON_DATA_INVALID = "reason-data-invalid"
    REASON_TALK_TO_AGENT = "reason-talk-to-agent"
    SEGMENT_PBI = "segment-pbi"
    SEGMENT_PPU = "segment-ppu"
    SEGMENT_PBPU = "segment-pbpu"
    SEGMENT_BP = "segment-bp"
    CLASS_1 = "class-1"
    CLASS_2 = "class-2"
    CLASS_3 = "class-3"
    BILL_AMOUNT = "bill-amount"
    BILL_FOR = "bill-for"
    BILL_MONTHS = "bill-months"
    BILL_AND = "bill-and"
    BILL_MEMBERS = "bill-members"
    BILL_DUE_DATE = "bill-due-date"
    BILL_NOTHING_DUE = "bill-nothing-due"
    BILL_GOVERNMENT = "bill-government"
    BILL_EMPLOYER = "bill-employer"
    BILL_UNAVAILABLE = "bill-unavailable"
    POST_MENU = "post-menu"
    HOW_TO_PAY = "how-to-pay"
    VA_NUMBER = "va-number"
    GOODBYE = "goodbye"


# Played by the dialplan, not the flow, or chosen by the operator (IVR_ANNOUNCEMENT).
DIALPLAN_PROMPTS = frozenset({"agi-unavailable"})
ANNOUNCEMENT_PREFIX = "announcement-"


class Var(StrEnum):
    """Channel variables the IVR leaves for the dialplan and the agents."""
    OUTCOME = "IVR_OUTCOME"
    TRANSFER_REASON = "IVR_TRANSFER_REASON"
    VERIFIED = "IVR_VERIFIED"
    CARD = "IVR_CARD"
    MEMBER_STATUS = "IVR_MEMBER_STATUS"
    CALL_ID = "IVR_CALL_ID"


# The "__" prefix makes Asterisk hand a variable down to the agent's channel.
INHERITED = "__"


class Outcome(StrEnum):
    COMPLETED = "completed"
    TRANSFER = "transfer"
    NO_INPUT = "no_input"
    ABANDONED = "abandoned"
    ERROR = "error"


class Reason(StrEnum):
    CALLER_REQUEST = "caller_request"
    INVALID_INPUT = "invalid_input"
    VERIFICATION_FAILED = "verification_failed"
    SERVICE_UNAVAILABLE = "service_unavailable"
    LOCKED = "locked"
