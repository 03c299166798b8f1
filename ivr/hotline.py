"""The hotline call flow (``../shared/spec/hotline.md``), as the caller hears it.

``Hotline.run()`` greets, offers the main menu, and goes where the caller's keys lead. Each
step is a small method. A step that ends the call (goodbye, transfer) says its last prompt
and raises ``CallEnded``; ``run()`` turns that into the call's result.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date
from typing import Awaitable, Callable, Iterable, Protocol

from . import speech
from .dialog import Dialog, Ending, Retry, Utterance
from .lockout import LockoutUnavailable
from .identifiers import BIRTH_DATE_LENGTH, NIK_LENGTH, Kind, classify, parse_birth_date, \
    virtual_account
from .membership import MembershipUnavailable, Participant
from .names import Outcome, P, Reason
from .privacy import mask_number

log = logging.getLogger(__name__)

MAX_INVALID_ENTRIES = 3
MAX_FAILED_VERIFICATIONS = 3
# (v1.3) A NIK whose participant has no registered mobile number: the caller is asked for
# the card number; the second such NIK in a call goes to an agent.
MAX_NIKS_WITHOUT_PHONE = 2
PHONE_LAST4_LENGTH = 4
LOOKUP_GRACE_SECONDS = 1.0     # past the lookup's own deadline: only a lookup that ignores it

POST_MENU_RETRY = Retry(silent=1, invalid=3)
CONFIRM_RETRY = Retry(silent=3, invalid=3, together=True, explain_invalid=False)

REASON_PROMPTS = {
    "TUNGGAKAN": P.REASON_ARREARS,
    "PENANGGUHAN": P.REASON_SUSPENDED,
    "NONAKTIF_PBI": P.REASON_PBI_REMOVED,
    "DATA_TIDAK_VALID": P.REASON_DATA_INVALID,
}
SEGMENT_PROMPTS = {"PBI": P.SEGMENT_PBI, "PPU": P.SEGMENT_PPU, "PBPU": P.SEGMENT_PBPU,
                   "BP": P.SEGMENT_BP}
CLASS_PROMPTS = {1: P.CLASS_1, 2: P.CLASS_2, 3: P.CLASS_3}
PAID_BY_OTHERS = {"PEMERINTAH": P.BILL_GOVERNMENT, "PEMBERI_KERJA": P.BILL_EMPLOYER}


class Lookup(Protocol):
    async def lookup(self, identifier: str, request_id: str, deadline: float | None = None
                     ) -> Participant | None: ...


class Lockout(Protocol):
    async def is_locked(self, identifier: str, caller: str) -> bool: ...
    async def record_failure(self, identifier: str, caller: str,
                             participant_ids: Iterable[str] = ()) -> None: ...


@dataclass(frozen=True)
class FlowSettings:
    lookup_timeout: float = 3.0
    hold_prompt_after: float = 1.0
    announcement: str = ""
    # the operator's live mode (ivr.service_modes.Mode): normal, agents_only, status_only
    mode: str = "normal"


@dataclass
class CallState:
    """What the flow learned; the call record and the channel variables are made from it."""
    outcome: Outcome | None = None
    transfer_reason: Reason | None = None
    verified_card: str = ""
    member_status: str = ""
    identifier_masked: str = ""      # the last identifier typed, masked (for agents)
    membership_latency_ms: float | None = None
    membership_lookups: int = 0
    time_to_status_ms: int | None = None    # wall clock from answer to the status
    audio_to_status_ms: int | None = None   # full length of the prompts started before it


class CallEnded(Exception):
    def __init__(self, outcome: Outcome, reason: Reason | None = None) -> None:
        super().__init__(outcome, reason)
        self.outcome, self.reason = outcome, reason


class Hotline:
    def __init__(self, dialog: Dialog, membership: Lookup, lockout: Lockout, *,
                 call_id: str, caller: str, settings: FlowSettings,
                 today: Callable[[], date] = date.today) -> None:
        self.dialog = dialog
        self.membership = membership
        self.lockout = lockout
        self.call_id = call_id
        self.caller = caller
        self.settings = settings
        self.today = today
        self.state = CallState()
        self.invalid_entries = 0
        self.failed_verifications = 0
        self.niks_without_phone = 0

    def say(self, *prompt_ids: str, barge_in: bool = False) -> Awaitable[None]:
        return self.dialog.say(*(self.dialog.prompt(p) for p in prompt_ids), barge_in=barge_in)

    async def run(self) -> CallState:
        try:
            await self.greet()
            if self.settings.mode == "agents_only":    # self-service switched off for now
                await self.hand_to_agent(Reason.SERVICE_UNAVAILABLE)
            await self.main_menu()
        except CallEnded as end:
            self.state.outcome, self.state.transfer_reason = end.outcome, end.reason
        return self.state

    # -- 1, 2: greeting and main menu

    async def greet(self) -> None:
        prompts = [P.GREETING] + ([self.settings.announcement] if self.settings.announcement
                                  else [])
        await self.say(*prompts, barge_in=True)

    async def main_menu(self) -> None:
        while True:
            choice = await self.dialog.menu([self.dialog.prompt(P.MAIN_MENU)], "120",
                                            repeat="9")
            if choice is Ending.NO_INPUT:
                await self.goodbye(Outcome.NO_INPUT)
            elif choice is Ending.TOO_MANY_INVALID:
                await self.hand_to_agent(Reason.INVALID_INPUT)
            elif choice == "1":
                await self.status_and_billing()
            elif choice == "2":
                await self.how_to_pay()
            else:
                await self.hand_to_agent(Reason.CALLER_REQUEST)

    # -- 3, 4, 5: identify, birth date, look up

    async def status_and_billing(self) -> None:
        participant = await self.verify()
        await self.post_menu(participant)

    async def verify(self) -> Participant:
        while True:
            identifier = await self.identify()
            born = await self.birth_date()
            phone = await self.nik_phone(identifier)
            participant = await self.look_up(identifier)
            if participant is not None and participant.birth_date == born:
                if phone is None or phone == participant.phone_last4:
                    self.state.verified_card = participant.card_number
                    self.state.member_status = participant.status
                    return participant
                if participant.phone_last4 is None:
                    await self.nik_without_phone()
                    continue
            found = (participant.card_number, participant.nik) if participant else ()
            await self._lockout(self.lockout.record_failure(identifier, self.caller, found))
            self.failed_verifications += 1
            if self.failed_verifications >= MAX_FAILED_VERIFICATIONS:
                await self.hand_to_agent(Reason.VERIFICATION_FAILED, P.DATA_MISMATCH)
            await self.say(P.DATA_MISMATCH, barge_in=True)

    async def identify(self) -> str:
        while True:
            entry = await self.dialog.gather(self.dialog.prompt(P.ENTER_ID),
                                             max_digits=NIK_LENGTH)
            kind = classify(entry.digits, entry.ended_by)
            if kind is None:
                await self.invalid_entry(P.ID_INVALID)
                continue
            self.state.identifier_masked = mask_number(entry.digits)
            if await self.confirmed(entry.digits, kind):
                if await self._lockout(self.lockout.is_locked(entry.digits, self.caller)):
                    await self.hand_to_agent(Reason.LOCKED)
                return entry.digits

    async def confirmed(self, digits: str, kind: Kind) -> bool:
        readback = P.READBACK_CARD if kind is Kind.CARD else P.READBACK_NIK
        question = [self.dialog.prompt(readback), self.dialog.secret_digits(digits),
                    self.dialog.prompt(P.CONFIRM_ID)]
        choice = await self.dialog.menu(question, "12", CONFIRM_RETRY)
        if isinstance(choice, Ending):
            await self.hand_to_agent(Reason.INVALID_INPUT)
        return choice == "1"

    async def birth_date(self) -> date:
        while True:
            entry = await self.dialog.gather(self.dialog.prompt(P.ENTER_BIRTH_DATE),
                                             max_digits=BIRTH_DATE_LENGTH)
            born = parse_birth_date(entry.digits, self.today())
            if born is not None:
                return born
            await self.invalid_entry(P.BIRTH_DATE_INVALID)

    async def nik_phone(self, identifier: str) -> str | None:
        """(v1.3) A NIK carries its holder's birth date, so it needs one more factor: the
        last 4 digits of the registered mobile number, asked before the lookup. None for a
        card number (with the birth date, enough)."""
        if len(identifier) != NIK_LENGTH:
            return None
        while True:
            entry = await self.dialog.gather(self.dialog.prompt(P.ENTER_PHONE_LAST4),
                                             max_digits=PHONE_LAST4_LENGTH)
            if len(entry.digits) == PHONE_LAST4_LENGTH and entry.digits.isdigit():
                return entry.digits
            await self.invalid_entry(P.PHONE_INVALID)

    async def nik_without_phone(self) -> None:
        """The birth date matched but no mobile number is registered: the NIK cannot be
        verified. Neither an invalid entry nor a failed verification."""
        self.niks_without_phone += 1
        if self.niks_without_phone >= MAX_NIKS_WITHOUT_PHONE:
            await self.hand_to_agent(Reason.VERIFICATION_FAILED)
        await self.say(P.NIK_NEEDS_CARD, barge_in=True)

    async def invalid_entry(self, prompt_id: str) -> None:
        """Wrong identifiers and birth dates share one budget per call."""
        self.invalid_entries += 1
        if self.invalid_entries >= MAX_INVALID_ENTRIES:
            await self.hand_to_agent(Reason.INVALID_INPUT, prompt_id)
        await self.say(prompt_id, barge_in=True)

    async def look_up(self, identifier: str) -> Participant | None:
        """Ask the membership service, listening meanwhile (a key pressed now is kept);
        say "mohon tunggu" only if it takes a while, and only a version of it that ends
        before the lookup's limit, so that the caller hears the answer or the apology within
        the limit (plus at most the short prompt). The latency recorded is the lookup's own."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.lookup_timeout
        # The lookup keeps the limit itself: a lookup that runs out of time is a failure
        # of the service (its breaker counts it), not one the hotline gave up on.
        task = asyncio.create_task(self.membership.lookup(identifier, self.call_id, deadline))
        answered: list[float] = []
        task.add_done_callback(lambda _: answered.append(loop.time()))
        failed = False
        participant = None
        try:
            await self.dialog.listen_while(task, deadline, self.settings.hold_prompt_after,
                                           self._hold_prompt())
            # (the lookup ends by its deadline; this bound only guards a lookup that won't)
            participant = await asyncio.wait_for(task, max(deadline - loop.time(), 0.0)
                                                 + LOOKUP_GRACE_SECONDS)
        except (MembershipUnavailable, TimeoutError):
            failed = True
        finally:
            task.cancel()
            self.state.membership_lookups += 1
            ended = answered[0] if answered else loop.time()
            self.state.membership_latency_ms = round((ended - started) * 1000, 1)
        if failed:
            await self.hand_to_agent(Reason.SERVICE_UNAVAILABLE, P.SERVICE_UNAVAILABLE)
        return participant

    def _hold_prompt(self) -> Utterance | None:
        """The longest hold prompt that ends before the lookup's limit (the full one when
        prompt lengths are unknown), or None when not even the short one would."""
        room_ms = (self.settings.lookup_timeout - self.settings.hold_prompt_after) * 1000
        durations = self.dialog.durations
        for prompt_id in (P.PLEASE_WAIT, P.PLEASE_WAIT_SHORT):
            if prompt_id not in durations or durations[prompt_id] <= room_ms:
                return self.dialog.prompt(prompt_id)
        return None

    # -- 6, 7: status and billing, then the post-menu

    async def post_menu(self, participant: Participant) -> None:
        report = True
        while True:
            if report:
                await self.report(participant)
            choice = await self.dialog.menu([self.dialog.prompt(P.POST_MENU)], "1290",
                                            POST_MENU_RETRY)
            report = choice == "1"
            if choice is Ending.NO_INPUT:
                await self.goodbye(Outcome.COMPLETED)
            elif choice is Ending.TOO_MANY_INVALID:
                await self.hand_to_agent(Reason.INVALID_INPUT)
            elif choice == "2":
                await self.how_to_pay(participant)
            elif choice == "0":
                await self.hand_to_agent(Reason.CALLER_REQUEST)
            elif choice == "9":
                return

    async def report(self, participant: Participant) -> None:
        """The status, said with the post-menu that follows it (one question)."""
        if self.state.time_to_status_ms is None and not self.dialog.typed_ahead:
            self.state.time_to_status_ms = self.dialog.elapsed_ms()
            self.state.audio_to_status_ms = self.dialog.audio_ms
        await self.dialog.say(*self.status(participant), barge_in=True)

    def status(self, p: Participant) -> list[Utterance]:
        prompt = self.dialog.prompt
        if p.active:
            said = [prompt(P.STATUS_ACTIVE)]
        elif p.inactive_reason in REASON_PROMPTS:
            said = [prompt(P.STATUS_INACTIVE), prompt(REASON_PROMPTS[p.inactive_reason])]
        else:  # deceased, "other", or a reason this IVR does not know: an agent explains
            return [prompt(P.STATUS_INACTIVE), prompt(P.REASON_TALK_TO_AGENT)]
        said += [prompt(SEGMENT_PROMPTS[p.segment]), prompt(CLASS_PROMPTS[p.member_class])]
        if self.settings.mode == "status_only":       # billing switched off for now
            return said + [prompt(P.BILL_UNAVAILABLE)]
        return said + self.billing(p)

    def billing(self, p: Participant) -> list[Utterance]:
        prompt, spoken, bill = self.dialog.prompt, self.dialog.spoken, p.billing
        if bill is None:
            return [prompt(P.BILL_UNAVAILABLE)]
        if bill.payer in PAID_BY_OTHERS:
            return [prompt(PAID_BY_OTHERS[bill.payer])]
        if bill.amount_due == 0:
            return [prompt(P.BILL_NOTHING_DUE)]
        said = [prompt(P.BILL_AMOUNT), spoken(speech.money(bill.amount_due)), prompt(P.BILL_FOR)]
        if bill.months_in_arrears:
            said += [spoken(speech.number(bill.months_in_arrears)), prompt(P.BILL_MONTHS),
                     prompt(P.BILL_AND)]
        said += [spoken(speech.number(bill.family_members)), prompt(P.BILL_MEMBERS)]
        if bill.due_date is not None:
            said += [prompt(P.BILL_DUE_DATE), spoken(speech.spoken_date(bill.due_date))]
        return said

    # -- 8: how to pay

    async def how_to_pay(self, participant: Participant | None = None) -> None:
        said = [self.dialog.prompt(P.HOW_TO_PAY)]
        if participant is not None:
            said += [self.dialog.prompt(P.VA_NUMBER),
                     self.dialog.secret_digits(virtual_account(participant.card_number))]
        await self.dialog.say(*said, barge_in=True)

    # -- endings

    async def goodbye(self, outcome: Outcome) -> None:
        await self.say(P.GOODBYE)
        raise CallEnded(outcome)

    async def _lockout(self, counting: Awaitable):
        """The lockout store's answer; unreadable, the call fails closed: the apology and
        an agent, never self-service unchecked."""
        try:
            return await counting
        except LockoutUnavailable as exc:
            log.error("call %s: %s; the call goes to an agent", self.call_id, exc)
            await self.hand_to_agent(Reason.SERVICE_UNAVAILABLE, P.SERVICE_UNAVAILABLE)

    async def hand_to_agent(self, reason: Reason, *before: str) -> None:
        last = P.LOCKED if reason is Reason.LOCKED else P.TRANSFER_AGENT
        await self.say(*before, last)
        raise CallEnded(Outcome.TRANSFER, reason)
