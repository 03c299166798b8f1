"""No default secret beyond loopback: the IVR's own settings, ``ivr serve`` and
``ivr membership`` refusing to start, and the compose file requiring every secret."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ivr.agi.listener import allowed, parse_allow_list
from ivr.app import running_services
from ivr.config import Settings
from ivr.exposure import InsecureConfiguration, check, desk_problems, is_loopback, weak_secret

REPO = Path(__file__).resolve().parent.parent
STRONG = secrets.token_hex(32)


def test_loopback_hosts():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["", "0.0.0.0", "::", "10.0.0.1", "membership"]))


@pytest.mark.parametrize("value", ["", "bpjs-sandbox", "agent-sandbox", "CHANGE-ME",
                                   "change-me-for-anything-but-a-demo", "short-secret"])
def test_weak_secrets(value):
    assert weak_secret(value)


def test_a_random_secret_is_strong():
    assert weak_secret(STRONG) is None


def settings(**values) -> Settings:
    return Settings.from_env({}, **values)


def test_loopback_defaults_need_no_secret():
    assert check(settings()) == []
    assert check(settings(lockout_salt="test-salt", membership_token="")) == []


def test_agi_beyond_loopback_refuses_a_default_salt_but_not_a_generated_one():
    assert check(settings(agi_host="0.0.0.0")) == []     # salt made and kept by the store
    (problem,) = check(settings(agi_host="0.0.0.0",
                                lockout_salt="change-me-for-anything-but-a-demo"))
    assert "IVR_LOCKOUT_SALT is a known default" in problem
    assert check(settings(agi_host="0.0.0.0", lockout_salt=STRONG)) == []


def test_membership_beyond_loopback_needs_a_strong_token():
    assert "IVR_MEMBERSHIP_TOKEN is not set" in \
        check(settings(embedded_membership_host="0.0.0.0"))[0]
    assert "IVR_MEMBERSHIP_TOKEN is not set" in \
        check(settings(membership_url="http://membership:8400"))[0]
    assert check(settings(membership_url="http://10.2.0.7:8400", membership_token="secret"))
    assert check(settings(membership_url="http://membership:8400",
                          membership_token=STRONG)) == []
    assert check(settings(membership_url="http://127.0.0.1:8400")) == []


def test_an_allow_list_open_to_everyone_is_refused_beyond_loopback():
    assert check(settings(agi_host="0.0.0.0", agi_allow="0.0.0.0/0"))
    assert check(settings(agi_host="::", agi_allow="10.0.0.7/32, ::/0"))
    assert check(settings(agi_allow="not-a-network"))
    assert check(settings(agi_host="0.0.0.0", agi_allow="10.0.0.7/32")) == []


def test_remote_redis_needs_a_password():
    assert check(settings(lockout_redis_url="redis://redis.internal:6379/0"))
    assert check(settings(lockout_redis_url=f"redis://:{STRONG}@redis.internal:6379/0")) == []
    assert check(settings(lockout_redis_url="redis://127.0.0.1:6379/0")) == []


def test_a_remote_postgresql_store_needs_a_password_for_the_ivr_and_the_desk():
    for url in ("postgresql://ivr@db.internal/ivr", "postgresql://ivr:secret@db.internal/ivr"):
        problems = check(settings(store_url=url)) + desk_problems(settings(store_url=url))
        assert len(problems) == 2 and all("IVR_STORE_URL" in p for p in problems), url
        assert "secret@" not in " ".join(problems)                  # the URL is not echoed
    assert check(settings(store_url=f"postgresql://ivr:{STRONG}@db.internal/ivr")) == []
    assert desk_problems(settings(store_url="postgresql://ivr@127.0.0.1/ivr")) == []


async def test_the_services_refuse_to_start_with_a_default_secret_beyond_loopback(tmp_path):
    unsafe = settings(agi_host="0.0.0.0", lockout_salt="change-me-for-anything-but-a-demo",
                      state_db=str(tmp_path / "state.sqlite3"),
                      call_records=str(tmp_path / "calls.jsonl"))
    with pytest.raises(InsecureConfiguration):
        async with running_services(unsafe):
            pass


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "ivr.cli", *args], env=environment,
                          capture_output=True, text=True, timeout=60)


def test_ivr_serve_beyond_loopback_with_a_default_secret_does_not_start(tmp_path):
    done = run_cli("serve", IVR_AGI_HOST="0.0.0.0", IVR_AGI_PORT="0",
                   IVR_VAR_DIR=str(tmp_path), IVR_MEMBERSHIP_URL="http://membership:8400",
                   IVR_MEMBERSHIP_TOKEN="bpjs-sandbox")
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "IVR_MEMBERSHIP_TOKEN" in done.stderr


def test_ivr_membership_beyond_loopback_without_a_token_does_not_start(tmp_path):
    done = run_cli("membership", "--host", "0.0.0.0", "--port", "0",
                   "--db", str(tmp_path / "m.sqlite3"))
    assert done.returncode == 2 and "IVR_MEMBERSHIP_TOKEN is not set" in done.stderr


# -- the compose file

_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Docker compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""
    def one(match: re.Match) -> str:
        name, kind, word = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {word}")
        return word if kind == "-" else ""
    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


SECRETS = ("IVR_MEMBERSHIP_TOKEN", "IVR_LOCKOUT_SALT", "IVR_AMI_SECRET", "IVR_AGENT_PASSWORD")


def test_compose_requires_every_secret(compose):
    seen = set()
    for service in compose["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if name in SECRETS or re.search(r"SECRET|PASSWORD|TOKEN|SALT", name):
                assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", str(value)), name
                with pytest.raises(KeyError):
                    interpolate(str(value), {})
                seen.add(name)
    assert seen == set(SECRETS)


def test_compose_publishes_nothing_beyond_loopback_by_default(compose):
    for service in compose["services"].values():
        for port in service.get("ports", []):
            host = interpolate(port, {}).rsplit(":", 2)[0]
            assert is_loopback(host), port


def test_compose_lets_only_the_asterisk_container_in_and_only_the_host_call(compose):
    services = compose["services"]
    network = compose["networks"]["hotline"]["ipam"]["config"][0]
    asterisk_ip = services["asterisk"]["networks"]["hotline"]["ipv4_address"]
    ivr_env = services["ivr"]["environment"]
    allow = parse_allow_list(ivr_env["IVR_AGI_ALLOW"])
    assert allowed(asterisk_ip, allow)
    others = [s["networks"]["hotline"]["ipv4_address"] for name, s in services.items()
              if name != "asterisk"]
    assert not any(allowed(ip, allow) for ip in others + [network["gateway"]])
    callers = interpolate(services["asterisk"]["environment"]["IVR_SIP_CALLERS"], {})
    assert callers == network["gateway"] + "/32"


def test_the_compose_services_pass_their_own_checks_once_secrets_are_set(compose):
    env = {name: secrets.token_hex(32) for name in SECRETS}
    ivr_env = {k: interpolate(str(v), env)
               for k, v in compose["services"]["ivr"]["environment"].items()}
    assert check(Settings.from_env(ivr_env)) == []
    weak = dict(env, IVR_LOCKOUT_SALT="change-me-for-anything-but-a-demo")
    assert check(Settings.from_env({k: interpolate(str(v), weak) for k, v in
                                    compose["services"]["ivr"]["environment"].items()}))
