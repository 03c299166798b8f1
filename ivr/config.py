"""All configuration, in one place: environment variables ``IVR_*`` with safe defaults.

``Settings.from_env()`` is called once, at start-up, by the command line; everything else
receives the ``Settings`` object (no module reads the environment on its own).
"""
from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Mapping


def _var_dir() -> Path:
    return Path(os.environ.get("IVR_VAR_DIR", "var"))


@dataclass(frozen=True)
class Settings:
    # FastAGI server
    agi_host: str = field(default="127.0.0.1", metadata={"env": "IVR_AGI_HOST"})
    agi_port: int = field(default=4573, metadata={"env": "IVR_AGI_PORT"})
    header_timeout: float = field(default=5.0, metadata={"env": "IVR_HEADER_TIMEOUT"})
    header_max_bytes: int = field(default=16384, metadata={"env": "IVR_HEADER_MAX_BYTES"})
    reply_timeout: float = field(default=60.0, metadata={"env": "IVR_REPLY_TIMEOUT"})
    max_call_seconds: float = field(default=1200.0, metadata={"env": "IVR_MAX_CALL_SECONDS"})
    workers: int = field(default=1, metadata={"env": "IVR_WORKERS"})   # processes, one port

    # Membership service (unset URL: start the embedded reference service and use it)
    membership_url: str = field(default="", metadata={"env": "IVR_MEMBERSHIP_URL"})
    membership_token: str = field(default="", metadata={"env": "IVR_MEMBERSHIP_TOKEN"})
    membership_connect_timeout: float = field(
        default=1.0, metadata={"env": "IVR_MEMBERSHIP_CONNECT_TIMEOUT"})
    lookup_timeout: float = field(default=3.0, metadata={"env": "IVR_LOOKUP_TIMEOUT"})
    hold_prompt_after: float = field(default=1.0, metadata={"env": "IVR_HOLD_PROMPT_AFTER"})
    embedded_membership_host: str = field(
        default="127.0.0.1", metadata={"env": "IVR_EMBEDDED_MEMBERSHIP_HOST"})
    embedded_membership_port: int = field(
        default=8400, metadata={"env": "IVR_EMBEDDED_MEMBERSHIP_PORT"})
    membership_db: str = field(
        default_factory=lambda: str(_var_dir() / "membership.sqlite3"),
        metadata={"env": "IVR_MEMBERSHIP_DB"})

    # Dialog timing (seconds)
    menu_timeout: float = field(default=5.0, metadata={"env": "IVR_MENU_TIMEOUT"})
    first_digit_timeout: float = field(default=6.0, metadata={"env": "IVR_FIRST_DIGIT_TIMEOUT"})
    inter_digit_timeout: float = field(default=3.0, metadata={"env": "IVR_INTER_DIGIT_TIMEOUT"})

    # Records and state
    call_records: str = field(
        default_factory=lambda: str(_var_dir() / "calls.jsonl"),
        metadata={"env": "IVR_CALL_RECORDS"})
    state_db: str = field(
        default_factory=lambda: str(_var_dir() / "state.sqlite3"),
        metadata={"env": "IVR_STATE_DB"})

    # Store of the agent desk (ivr.store): PostgreSQL when a postgresql:// URL is set, else
    # the SQLite file; the IVR forwards its call records there (from IVR_CALL_RECORDS, or
    # from the outbox file when the records go to standard output, "-")
    store_url: str = field(default="", metadata={"env": "IVR_STORE_URL"})
    store_db: str = field(
        default_factory=lambda: str(_var_dir() / "store.sqlite3"),
        metadata={"env": "IVR_STORE_DB"})
    store_outbox: str = field(
        default_factory=lambda: str(_var_dir() / "calls-outbox.jsonl"),
        metadata={"env": "IVR_STORE_OUTBOX"})

    # Lockout (failed verifications within the window)
    lockout_identifier_failures: int = field(
        default=5, metadata={"env": "IVR_LOCKOUT_IDENTIFIER_FAILURES"})
    lockout_caller_failures: int = field(
        default=10, metadata={"env": "IVR_LOCKOUT_CALLER_FAILURES"})
    lockout_window_hours: float = field(default=24.0, metadata={"env": "IVR_LOCKOUT_WINDOW_HOURS"})
    lockout_salt: str = field(default="", metadata={"env": "IVR_LOCKOUT_SALT"})

    # Security (ivr/exposure.py, ivr/agi/listener.py, ivr/lockout.py). Asterisk addresses
    # allowed to open FastAGI sessions (CIDRs, comma-separated): FastAGI has no
    # authentication, so this list is the door. The cap on open FastAGI connections stays
    # below the open-files limit (the listener lowers it if needed). Callers without a
    # usable number share one lockout count with its own threshold and window. A Redis URL
    # shares every lockout count between IVR servers (unset: the SQLite state database).
    agi_allow: str = field(default="127.0.0.1/32,::1/128", metadata={"env": "IVR_AGI_ALLOW"})
    max_connections: int = field(default=20000, metadata={"env": "IVR_MAX_CONNECTIONS"})
    lockout_anonymous_failures: int = field(
        default=50, metadata={"env": "IVR_LOCKOUT_ANONYMOUS_FAILURES"})
    lockout_anonymous_window_hours: float = field(
        default=1.0, metadata={"env": "IVR_LOCKOUT_ANONYMOUS_WINDOW_HOURS"})
    lockout_redis_url: str = field(default="", metadata={"env": "IVR_LOCKOUT_REDIS_URL"})

    # Rendered prompts (<sounds>/id/bpjs/<id>.<ext> and the manifest)
    sounds_dir: str = field(
        default_factory=lambda: str(_var_dir() / "sounds"), metadata={"env": "IVR_SOUNDS_DIR"})

    # Operator announcement: a prompt id from the catalog, played after the greeting
    announcement: str = field(default="", metadata={"env": "IVR_ANNOUNCEMENT"})

    # Agent desk: Asterisk's manager interface (AMI) and the agents' queue. The secret has
    # no default: without it the desk does not connect (ivr/desk/ami.py).
    ami_host: str = field(default="127.0.0.1", metadata={"env": "IVR_AMI_HOST"})
    ami_port: int = field(default=5038, metadata={"env": "IVR_AMI_PORT"})
    ami_user: str = field(default="desk", metadata={"env": "IVR_AMI_USER"})
    ami_secret: str = field(default="", metadata={"env": "IVR_AMI_SECRET"})
    desk_queue: str = field(default="agents", metadata={"env": "IVR_DESK_QUEUE"})

    # Agent desk, web side (issue 9): the agents' page and its JSON/SSE interface.
    # Agents file (TOML) or, when empty, the demo agents agent1/agent2 with IVR_AGENT_PASSWORD.
    desk_host: str = field(default="127.0.0.1", metadata={"env": "IVR_DESK_HOST"})
    desk_port: int = field(default=8080, metadata={"env": "IVR_DESK_PORT"})
    desk_agents: str = field(default="", metadata={"env": "IVR_DESK_AGENTS"})
    agent_password: str = field(default="", metadata={"env": "IVR_AGENT_PASSWORD"})
    desk_dispositions: str = field(
        default="answered,escalated_to_branch,data_update_needed,complaint,other",
        metadata={"env": "IVR_DESK_DISPOSITIONS"})
    # The page's origin as browsers see it (e.g. https://desk.example behind a TLS proxy);
    # empty: the request's own scheme and Host. An https origin makes the cookie Secure.
    desk_origin: str = field(default="", metadata={"env": "IVR_DESK_ORIGIN"})
    desk_session_hours: float = field(default=12.0, metadata={"env": "IVR_DESK_SESSION_HOURS"})
    # Failed logins allowed within the window, per user name and per client address
    desk_login_failures: int = field(default=5, metadata={"env": "IVR_DESK_LOGIN_FAILURES"})
    desk_login_address_failures: int = field(
        default=20, metadata={"env": "IVR_DESK_LOGIN_ADDRESS_FAILURES"})
    desk_login_window_minutes: float = field(
        default=15.0, metadata={"env": "IVR_DESK_LOGIN_WINDOW_MINUTES"})
    desk_keepalive_seconds: float = field(
        default=15.0, metadata={"env": "IVR_DESK_KEEPALIVE_SECONDS"})

    # Operations (issue 12). On SIGTERM the server stops listening and lets the calls in
    # progress end for up to drain_seconds before it ends the rest. Call records that a
    # full disk refuses wait in memory, at most records_max_waiting per file. The breaker
    # of the membership service opens after breaker_failures failures in a row (callers
    # get the apology at once) and lets one lookup try again every breaker_retry_seconds.
    # Prometheus metrics on metrics_host:metrics_port (0: off).
    drain_seconds: float = field(default=600.0, metadata={"env": "IVR_DRAIN_SECONDS"})
    records_max_waiting: int = field(default=10000, metadata={"env": "IVR_RECORDS_MAX_WAITING"})
    breaker_failures: int = field(default=5, metadata={"env": "IVR_BREAKER_FAILURES"})
    breaker_retry_seconds: float = field(default=30.0,
                                         metadata={"env": "IVR_BREAKER_RETRY_SECONDS"})
    metrics_host: str = field(default="127.0.0.1", metadata={"env": "IVR_METRICS_HOST"})
    metrics_port: int = field(default=0, metadata={"env": "IVR_METRICS_PORT"})

    # Waiting for an agent (issue 13): announcements of position and expected wait, the
    # callback that keeps the caller's place, and staffed hours (ivr/waiting/).
    wait_announce_seconds: int = field(default=30, metadata={"env": "IVR_WAIT_ANNOUNCE_SECONDS"})
    # Callers this near the head of the line stay in the queue after an announcement (the
    # loop leaves Asterisk's queue to speak: a later caller could take their agent then).
    wait_stay_at: int = field(default=3, metadata={"env": "IVR_WAIT_STAY_AT"})
    callback_offer_after: float = field(default=60.0, metadata={"env": "IVR_CALLBACK_OFFER_AFTER"})
    callback_offer_over: float = field(default=180.0, metadata={"env": "IVR_CALLBACK_OFFER_OVER"})
    # The expected wait before any call was answered lately: the handle time assumed.
    wait_handle_seconds: float = field(default=240.0, metadata={"env": "IVR_WAIT_HANDLE_SECONDS"})
    wait_history_minutes: float = field(default=60.0, metadata={"env": "IVR_WAIT_HISTORY_MINUTES"})
    callback_trunk: str = field(default="carrier", metadata={"env": "IVR_CALLBACK_TRUNK"})
    callback_attempts: int = field(default=3, metadata={"env": "IVR_CALLBACK_ATTEMPTS"})
    callback_retry_seconds: float = field(default=300.0, metadata={"env": "IVR_CALLBACK_RETRY_SECONDS"})
    callback_ring_seconds: int = field(default=30, metadata={"env": "IVR_CALLBACK_RING_SECONDS"})
    # a queued callback whose placeholder Asterisk no longer has is placed again after this
    callback_watch_seconds: float = field(default=60.0, metadata={"env": "IVR_CALLBACK_WATCH_SECONDS"})
    # Empty: always staffed. Else e.g. "mon-fri 08:00-20:00; sat 08:00-14:00" (local time);
    # then Indonesian public holidays (and cuti bersama) are closed, and the extra dates
    # (YYYY-MM-DD, comma separated) are closed or open whatever the calendar says.
    staffed_hours: str = field(default="", metadata={"env": "IVR_STAFFED_HOURS"})
    staffed_timezone: str = field(default="Asia/Jakarta", metadata={"env": "IVR_STAFFED_TIMEZONE"})
    staffed_closed_dates: str = field(default="", metadata={"env": "IVR_STAFFED_CLOSED_DATES"})
    staffed_open_dates: str = field(default="", metadata={"env": "IVR_STAFFED_OPEN_DATES"})

    log_level: str = field(default="INFO", metadata={"env": "IVR_LOG_LEVEL"})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            kind = str if f.default is MISSING else type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}")
        values.update(overrides)
        return cls(**values)

    @property
    def uses_embedded_membership(self) -> bool:
        return not self.membership_url

    @property
    def effective_membership_url(self) -> str:
        if self.membership_url:
            return self.membership_url.rstrip("/")
        return f"http://{self.embedded_membership_host}:{self.embedded_membership_port}"

    @property
    def desk_disposition_list(self) -> list[str]:
        return [d.strip() for d in self.desk_dispositions.split(",") if d.strip()]

    @classmethod
    def documentation(cls) -> list[tuple[str, str]]:
        """(variable, default) pairs, for the README and ``ivr config``."""
        out = []
        for f in fields(cls):
            default = f.default_factory() if callable(f.default_factory) else f.default
            out.append((f.metadata["env"], str(default)))
        return out
