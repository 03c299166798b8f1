"""The agent desk's exposure: beyond loopback it refuses a default, empty or weak agent
password and AMI secret; the compose file lets only the desk container log in to AMI."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ivr.config import Settings
from ivr.desk.app import running_desk
from ivr.exposure import InsecureConfiguration, desk_problems

from .test_exposure import compose, interpolate  # noqa: F401

STRONG = "a-real-secret-of-32-characters!!"


def settings(**values) -> Settings:
    return Settings.from_env({}, **values)


def test_on_loopback_a_short_demo_password_is_fine():
    assert desk_problems(settings(agent_password="desk-demo", ami_secret="x")) == []


@pytest.mark.parametrize("password", ["", "agent-sandbox", "short-pass"])
def test_beyond_loopback_a_weak_agent_password_is_refused(password):
    problems = desk_problems(settings(desk_host="0.0.0.0", agent_password=password,
                                      ami_secret=STRONG))
    assert len(problems) == 1 and "IVR_AGENT_PASSWORD" in problems[0]


def test_an_accounts_file_holds_only_hashes_and_needs_no_password(tmp_path):
    assert desk_problems(settings(desk_host="0.0.0.0", desk_agents=str(tmp_path / "a.toml"),
                                  ami_secret=STRONG)) == []


def test_a_remote_asterisk_needs_a_real_ami_secret():
    problems = desk_problems(settings(ami_host="10.0.0.5", ami_secret="bpjs-sandbox",
                                      agent_password=STRONG))
    assert len(problems) == 1 and "IVR_AMI_SECRET" in problems[0]


async def test_running_desk_refuses_before_listening():
    with pytest.raises(InsecureConfiguration):
        async with running_desk(settings(desk_host="0.0.0.0", agent_password="short-pass",
                                         ami_secret=STRONG)):
            pytest.fail("the desk started")


def test_ivr_desk_exits_with_the_reason(tmp_path):
    env = {**os.environ, "IVR_VAR_DIR": str(tmp_path), "IVR_DESK_HOST": "0.0.0.0",
           "IVR_AGENT_PASSWORD": "agent-sandbox", "IVR_AMI_SECRET": STRONG}
    run = subprocess.run([sys.executable, "-m", "ivr.cli", "desk"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "IVR_AGENT_PASSWORD is a known default" in run.stderr


def test_compose_lets_only_the_desk_container_log_in_to_ami(compose):  # noqa: F811
    services = compose["services"]
    desk_ip = services["desk"]["networks"]["hotline"]["ipv4_address"]
    asterisk = services["asterisk"]["environment"]
    assert asterisk["IVR_DESK_AMI_PERMIT"] == f"{desk_ip}/255.255.255.255"
    desk = services["desk"]["environment"]
    assert desk["IVR_AMI_HOST"] == "asterisk"
    # the desk and the IVR share the store's file
    assert desk["IVR_STORE_DB"] == services["ivr"]["environment"]["IVR_STORE_DB"]
    env = {name: "x" * 40 for name in ("IVR_AMI_SECRET", "IVR_AGENT_PASSWORD")}
    assert desk_problems(Settings.from_env({k: interpolate(str(v), env)
                                            for k, v in desk.items()})) == []
