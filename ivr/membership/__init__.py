"""The membership service: its data model, the HTTP client the IVR uses, and the
reference implementation of the contract (``../shared/spec/membership-api.md``)."""
from .model import Billing, MembershipUnavailable, Participant, parse_participant

__all__ = ["Billing", "MembershipUnavailable", "Participant", "parse_participant"]
