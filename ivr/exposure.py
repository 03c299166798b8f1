"""What the IVR exposes beyond loopback, and the secrets that must guard it.

The rule: nothing listens beyond loopback unless configured, and a service reachable beyond
loopback never runs with a default, empty or weak secret. On loopback (a developer's machine,
the tests) short secrets are fine; beyond it ``check`` lists every problem and the server
refuses to start (``InsecureConfiguration``).
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .config import Settings

# A secret shorter than this is weak (``openssl rand -hex 32`` gives 64 characters).
MIN_SECRET_LENGTH = 16
# Values this project (or a copy-paste from its docs) ever shipped as defaults, and the
# usual placeholders: never accepted beyond loopback, whatever their length.
KNOWN_DEFAULTS = frozenset({
    "bpjs-sandbox", "agent-sandbox", "change-me-for-anything-but-a-demo", "change-me",
    "changeme", "secret", "password", "test-salt", "s3cret", "default",
})


class InsecureConfiguration(Exception):
    """The configuration exposes a service beyond loopback without a proper secret."""


def is_loopback(host: str) -> bool:
    """Whether a host to bind or reach is this machine only (``localhost``, 127/8, ::1).
    Empty, ``0.0.0.0``, ``::`` and any name other than localhost are beyond loopback."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def weak_secret(value: str) -> str | None:
    """Why a secret cannot guard a service beyond loopback, or None when it can."""
    if not value:
        return "not set"
    if value.strip().lower() in KNOWN_DEFAULTS:
        return "a known default"
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    return None


def _url_host(url: str) -> str:
    return urlsplit(url).hostname or ""


def membership_server_problems(host: str, token: str) -> list[str]:
    """The reference membership service bound to ``host`` with ``token``."""
    if is_loopback(host):
        return []
    why = weak_secret(token)
    return [f"IVR_MEMBERSHIP_TOKEN is {why}, and the membership service listens on {host}"
            ] if why else []


def check(settings: Settings) -> list[str]:
    """Every problem of exposure in ``settings`` (empty: fine to start)."""
    from .agi.listener import parse_allow_list
    problems = []
    agi_exposed = not is_loopback(settings.agi_host)
    try:
        allow = parse_allow_list(settings.agi_allow)
    except ValueError as exc:
        problems.append(str(exc))
    else:
        if agi_exposed and any(network.prefixlen == 0 for network in allow):
            problems.append("IVR_AGI_ALLOW admits every address: FastAGI has no "
                            "authentication, name the Asterisk servers")
    if agi_exposed and settings.lockout_salt and weak_secret(settings.lockout_salt):
        problems.append(f"IVR_LOCKOUT_SALT is {weak_secret(settings.lockout_salt)} "
                        f"(unset, a random one is made and kept in the lockout store)")
    if settings.uses_embedded_membership:
        problems += membership_server_problems(settings.embedded_membership_host,
                                               settings.membership_token)
    elif not is_loopback(_url_host(settings.membership_url)):
        why = weak_secret(settings.membership_token)
        if why:
            problems.append(f"IVR_MEMBERSHIP_TOKEN is {why}, and identifiers go to a "
                            f"membership service beyond loopback")
    problems += _server_password_problems("IVR_LOCKOUT_REDIS_URL", settings.lockout_redis_url,
                                          "Redis")
    problems += _server_password_problems("IVR_STORE_URL", settings.store_url, "PostgreSQL")
    return problems


def _server_password_problems(name: str, url: str, what: str) -> list[str]:
    """A server reached at ``url`` beyond loopback needs a real password in it (the lockout
    counts; the store keeps verified cards and callback numbers). The URL is not echoed."""
    if not url:
        return []
    parts = urlsplit(url)
    why = weak_secret(parts.password or "")
    if why and not is_loopback(parts.hostname or ""):
        return [f"the password in {name} is {why}, and {what} is beyond loopback"]
    return []


def desk_problems(settings: Settings) -> list[str]:
    """The agent desk: beyond loopback, the demo agents' password and the AMI secret of an
    Asterisk beyond loopback must be real secrets (an accounts file holds only hashes)."""
    problems = []
    if not is_loopback(settings.desk_host) and not settings.desk_agents:
        why = weak_secret(settings.agent_password)
        if why:
            problems.append(f"IVR_AGENT_PASSWORD is {why}, and the desk listens on "
                            f"{settings.desk_host}")
    if not is_loopback(settings.ami_host):
        why = weak_secret(settings.ami_secret)
        if why:
            problems.append(f"IVR_AMI_SECRET is {why}, and Asterisk's AMI is at "
                            f"{settings.ami_host}")
    return problems + _server_password_problems("IVR_STORE_URL", settings.store_url,
                                                "PostgreSQL")


def ensure_safe(settings: Settings) -> None:
    problems = check(settings)
    if problems:
        raise InsecureConfiguration("refusing to start: " + "; ".join(problems))


def ensure_desk_safe(settings: Settings) -> None:
    problems = desk_problems(settings)
    if problems:
        raise InsecureConfiguration("refusing to start the desk: " + "; ".join(problems))
