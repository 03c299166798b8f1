"""What both engines share: checking what comes in, and the shape of what goes out.

Times come in as ISO 8601 strings and are kept as instants in UTC (``timestamptz`` in
PostgreSQL, canonical ISO text in SQLite, where text order is time order); they go out as
``ivr.records.now_iso()`` writes them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

MAX_ID = 128          # call ids, agent ids, participant pseudonyms, sources
MAX_TEXT = 2000       # wrap-up notes, audit actions
QUEUE_RESULTS = frozenset({"answered", "abandoned", "timeout", "callback", "withdrawn"})
HISTORY_LIMIT = 100   # earlier contacts returned at most


def parse_time(value: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError("a time must be an ISO 8601 string")
    at = datetime.fromisoformat(value)
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


# The audit log's "call" of an operator's change to the live service settings.
SERVICE_AUDIT = "service-settings"


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def canonical(value: str) -> str:
    """An incoming time as SQLite keeps it."""
    return iso(parse_time(value))


def now() -> datetime:
    return datetime.now(timezone.utc)


def since(days: int) -> datetime:
    return now() - timedelta(days=days)


def check_text(value, what: str, limit: int = MAX_ID, *, empty: bool = False) -> str:
    """A string from a peer, fit for a column of both engines (PostgreSQL text holds no
    NUL) and for the logs (no control characters in ids)."""
    if not isinstance(value, str) or len(value) > limit or (not value and not empty) \
            or "\x00" in value:
        raise ValueError(f"invalid {what}")
    if limit == MAX_ID and not value.isprintable():
        raise ValueError(f"invalid {what}")
    return value


def check_card(card) -> str:
    if not isinstance(card, str) or not card.isdigit() or not 1 <= len(card) <= 32 \
            or not card.isascii():
        raise ValueError("invalid card number")
    return card


def _without_nul(value):
    # PostgreSQL's jsonb refuses \u0000; a transcript line with one must not block the rest.
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {k.replace("\x00", ""): _without_nul(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class RecordRow:
    """The columns queried, and the whole record as JSON."""
    call_id: str
    started_at: datetime
    ended_at: datetime | None
    participant_ref: str | None
    outcome: str | None
    transfer_reason: str | None
    verified: bool
    body: str


def _optional(record: dict, name: str) -> str | None:
    value = record.get(name)
    return None if value is None else check_text(value, name)


def record_row(record) -> RecordRow:
    """One call record (a JSON object of ``ivr.records.CallRecord``), checked; ValueError
    when it is not one."""
    if not isinstance(record, dict):
        raise ValueError("a call record must be a JSON object")
    ended = record.get("ended_at")
    return RecordRow(
        call_id=check_text(record.get("call_id"), "call_id"),
        started_at=parse_time(record.get("started_at")),
        ended_at=None if ended is None else parse_time(ended),
        participant_ref=_optional(record, "participant_ref"),
        outcome=_optional(record, "outcome"),
        transfer_reason=_optional(record, "transfer_reason"),
        verified=bool(record.get("verified")),
        body=json.dumps(_without_nul(record), ensure_ascii=False, separators=(",", ":")),
    )


def record_out(body: str, card: str | None) -> dict:
    record = json.loads(body)
    record["card"] = card
    return record


def queue_out(joined: datetime | None, answered: datetime | None, left: datetime | None,
              answered_by: str | None, result: str | None) -> dict:
    """``waited_s``: from joining to being answered, or to leaving unanswered; None while
    the caller still waits (or when the join was never seen)."""
    end = answered or left
    waited = None if joined is None or end is None else \
        round(max(0.0, (end - joined).total_seconds()), 3)
    return {"joined_at": iso(joined), "waited_s": waited, "answered_by": answered_by,
            "result": result}


# -- callbacks (waiting for an agent, issue 13) -------------------------------------------
# scheduled: waits for its time (now, or the next staffed period); queued: its placeholder
# waits in the agents' queue in the caller's place; completed / failed: final.
CALLBACK_STATUSES = frozenset({"scheduled", "queued", "completed", "failed"})
STATS_LIMIT = 1000      # answered calls read for the queue statistics at most
BOARD_LIMIT = 200       # callbacks on the desk's queue board at most
# Which callbacks the board keeps when there are more: every open one first (earliest first
# join first), then those ended most lately.
BOARD_ORDER = ("ORDER BY CASE WHEN status IN ('scheduled', 'queued') THEN 0 ELSE 1 END, "
               "CASE WHEN status IN ('scheduled', 'queued') THEN joined_at END, updated_at DESC")


def check_callback(callback: dict) -> tuple:
    """(id, call_id, number, number_masked, joined_at, due_at, status), checked."""
    number = callback.get("number")
    if not isinstance(number, str) or not number.isdigit() or not number.isascii() \
            or not 8 <= len(number) <= 16:
        raise ValueError("invalid callback number")
    status = callback.get("status", "scheduled")
    if status not in CALLBACK_STATUSES:
        raise ValueError("invalid callback status")
    return (check_text(callback.get("id"), "id"), check_text(callback.get("call_id"), "call_id"),
            number, check_text(callback.get("number_masked"), "number_masked"),
            parse_time(callback.get("joined_at")), parse_time(callback.get("due_at")), status)


def check_status(status: str) -> str:
    if status not in CALLBACK_STATUSES:
        raise ValueError("invalid callback status")
    return status


def callback_out(row, attempts: list[tuple]) -> dict:
    """A callback as the desk and the scheduler see it: ``number`` is only for dialling."""
    (cid, call_id, number, masked, joined, due, status, created, updated) = row
    return {"id": cid, "call_id": call_id, "number": number, "number_masked": masked,
            "joined_at": iso(_as_time(joined)), "due_at": iso(_as_time(due)), "status": status,
            "created_at": iso(_as_time(created)), "updated_at": iso(_as_time(updated)),
            "attempts": [{"n": n, "at": iso(_as_time(at)), "result": result}
                         for n, at, result in attempts]}


def callbacks_out(rows: list[tuple], attempts: list[tuple]) -> list[dict]:
    """Callbacks (rows of the callback columns) with their attempts, read in one query:
    rows of (callback_id, n, at, result) ordered by callback and n."""
    by_callback: dict[str, list[tuple]] = {}
    for callback_id, n, at, result in attempts:
        by_callback.setdefault(callback_id, []).append((n, at, result))
    return [callback_out(row, by_callback.get(row[0], [])) for row in rows]


def _as_time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_time(value)


def stats_out(rows) -> dict:
    """Mean talk and wait of answered calls: rows of (joined_at, answered_at, left_at)."""
    talks, waits = [], []
    for joined, answered, left in rows:
        joined, answered, left = _as_time(joined), _as_time(answered), _as_time(left)
        if answered is not None and left is not None:
            talks.append(max(0.0, (left - answered).total_seconds()))
        if answered is not None and joined is not None:
            waits.append(max(0.0, (answered - joined).total_seconds()))
    return {"answered": len(talks),
            "mean_talk_s": sum(talks) / len(talks) if talks else None,
            "mean_wait_s": sum(waits) / len(waits) if waits else None}
