"""The sandbox's secrets: none has a default; each is given or generated once per instance,
kept with mode 0600 and reused; the rendered configuration carries them."""
from __future__ import annotations

import stat
from dataclasses import replace

from dialplan.sandbox import SOURCE_DIR, Sandbox
from ivr.config import Settings
from ivr.desk.accounts import Accounts
from ivr.desk.app import credentials_banner

OLD_DEFAULTS = {"bpjs-sandbox", "agent-sandbox"}


def box(tmp_path, name="one", **env) -> Sandbox:
    return Sandbox(root=tmp_path / "root", name=name, env=env)


def test_secrets_are_generated_once_kept_private_and_reused(tmp_path):
    first = box(tmp_path)
    values = (first.ami_secret, first.desk_ami_secret, first.agent_password)
    assert len(set(values)) == 3 and all(len(v) >= 20 for v in values)
    assert not set(values) & OLD_DEFAULTS
    assert stat.S_IMODE(first.secrets_file.stat().st_mode) == 0o600
    again = box(tmp_path)
    assert (again.ami_secret, again.desk_ami_secret, again.agent_password) == values
    other = box(tmp_path, name="two")
    assert other.agent_password not in values


def test_given_secrets_win_and_are_not_stored(tmp_path):
    given = box(tmp_path, IVR_AGENT_PASSWORD="from-the-test-1234", IVR_AMI_SECRET="desk-given-5678")
    assert given.agent_password == "from-the-test-1234"
    assert given.desk_ami_secret == "desk-given-5678"
    given.ami_secret                      # generated: the only one not given
    assert "from-the-test-1234" not in given.secrets_file.read_text()
    assert "desk-given-5678" not in given.secrets_file.read_text()


def test_rendered_config_uses_the_instance_secrets(tmp_path):
    sandbox = box(tmp_path)
    values = {"IVR_AMI_SECRET": sandbox.ami_secret, "IVR_DESK_AMI_SECRET": sandbox.desk_ami_secret,
              "IVR_AGENT_PASSWORD": sandbox.agent_password}
    pjsip = sandbox.render((SOURCE_DIR / "pjsip.conf").read_text(), {
        **values, "IVR_SIP_ADDRESS": "127.0.0.1:5060", "IVR_SIP_CALLERS": "127.0.0.1",
        "IVR_CARRIER_ADDRESS": "127.0.0.1:5070"})
    manager = sandbox.render((SOURCE_DIR / "manager.conf").read_text(),
                             {**values, "IVR_AMI_PORT": "5038", "IVR_AMI_BIND": sandbox.ami_bind,
                              "IVR_DESK_AMI_PERMIT": sandbox.desk_ami_permit})
    assert pjsip.count(f"password = {sandbox.agent_password}") == 2
    assert f"secret = {sandbox.desk_ami_secret}" in manager
    assert f"secret = {sandbox.ami_secret}" in manager
    assert not any(old in pjsip + manager for old in OLD_DEFAULTS)
    # the test caller is known by its address only, and nothing is taken for the carrier
    for endpoint in ("test-caller", "carrier"):
        section = pjsip.split(f"[{endpoint}]\ntype = endpoint\n")[1].split("\n[")[0]
        assert "identify_by = ip\n" in section, endpoint
    # the sandbox's AMI stays on loopback, and so does the desk's login
    assert "bindaddr = 127.0.0.1\n" in manager
    assert "permit = 127.0.0.1/255.255.255.255" in manager.split("[desk]")[1].split("[")[0]


def test_the_banner_prints_a_generated_password_never_one_the_operator_set(tmp_path):
    generated, given = box(tmp_path), box(tmp_path, name="two",
                                          IVR_AGENT_PASSWORD="operator-set-secret-99")
    assert not generated.agent_password_given and given.agent_password_given
    accounts = Accounts.demo("x" * 20, interface="PJSIP/{agent}")
    settings = Settings.from_env({})
    shown = credentials_banner("http://127.0.0.1:8080", replace(
        settings, agent_password=generated.agent_password), accounts, str(generated.secrets_file))
    assert generated.agent_password in shown and str(generated.secrets_file) in shown
    hidden = credentials_banner("http://127.0.0.1:8080", replace(
        settings, agent_password=given.agent_password), accounts, None)
    assert "operator-set-secret-99" not in hidden and "IVR_AGENT_PASSWORD" in hidden
