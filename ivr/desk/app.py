"""The agent desk's lifecycle: the store, the AMI link, the hub and the web service,
opened in order and closed in reverse (``ivr desk``, and ``ivr asterisk serve`` beside the
IVR)."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from typing import AsyncIterator, Callable

from ..config import Settings
from ..exposure import InsecureConfiguration, ensure_desk_safe
from ..signals import stop_event
from ..store import open_store
from ..waiting.scheduler import CallbackScheduler
from .accounts import Accounts
from .ami import AmiLink
from .board import QueueBoard
from .service import Desk
from .web import running_desk_web

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def running_desk(settings: Settings, *, accounts: Accounts | None = None,
                       port: int | None = None) -> AsyncIterator[tuple[str, Desk]]:
    """Yields the page's URL and the hub."""
    ensure_desk_safe(settings)
    accounts = accounts or demo_accounts(settings)
    if not settings.ami_secret:
        raise ValueError("IVR_AMI_SECRET is not set: the desk has no default AMI secret")
    store = open_store(settings)
    await store.open()
    desk = Desk(store, QueueBoard(settings.desk_queue), accounts,
                queue=settings.desk_queue, dispositions=settings.desk_disposition_list)
    link: AmiLink | None = None

    def on_state(state: str, detail: str = "") -> None:
        desk.on_state(state, detail)
        if state == "up":
            desk.resync(link.snapshot)

    scheduler: CallbackScheduler | None = None

    def on_event(event: dict) -> None:
        desk.on_event(event)
        scheduler.on_event(event)

    # "user": the dialplan's IvrCallback results for the callback scheduler.
    link = AmiLink(settings.ami_host, settings.ami_port, settings.ami_user,
                   settings.ami_secret, on_event=on_event, on_state=on_state,
                   events="agent,user")
    scheduler = CallbackScheduler.from_settings(store, link, settings,
                                                on_board=desk.set_callbacks)
    desk.attach(link)
    await desk.start()
    await scheduler.start()
    try:
        await link.start()
        try:
            async with running_desk_web(desk, accounts, settings, port=port) as url:
                yield url, desk
        finally:
            await link.stop()
    finally:
        await scheduler.stop()
        await desk.stop()
        await store.close()


async def serve_desk_until_stopped(settings: Settings, on_ready: Callable[[str], None],
                                   accounts: Accounts | None = None) -> None:
    stop = stop_event()
    async with running_desk(settings, accounts=accounts) as (url, _desk):
        on_ready(url)
        await stop.wait()
        log.info("desk: shutting down")


DEMO_INTERFACE = "Local/{agent}@agent-phones/n"   # dialplan/extensions.conf [agent-phones]


def demo_accounts(settings: Settings) -> Accounts:
    """The accounts file, or agent1 and agent2 rung through the sandbox's agent-phones
    context (their softphone when registered, else a simulated headset), with the one
    password of IVR_AGENT_PASSWORD."""
    return Accounts.from_settings(settings, demo_interface=DEMO_INTERFACE)


def sandbox_settings(settings: Settings, sandbox) -> Settings:
    """The desk's settings for the sandbox's Asterisk: its AMI port and the desk user's
    secret, and the demo agents' password (both generated once, kept in its state)."""
    return dataclasses.replace(settings, ami_host="127.0.0.1", ami_port=sandbox.ami_port,
                               ami_secret=sandbox.desk_ami_secret,
                               agent_password=sandbox.agent_password)


def credentials_banner(url: str, settings: Settings, accounts: Accounts,
                       kept_in: str | None) -> str:
    """The desk's address and its demo agents; their password only when it was generated
    (``kept_in`` says where): one the operator set is never printed (logs keep stdout)."""
    agents = ", ".join(agent.id for agent in accounts)
    text = f"agent desk at {url}/ - agents {agents}"
    if settings.desk_agents:
        return text
    if kept_in is None:
        return text + ", password as set in IVR_AGENT_PASSWORD"
    return text + f", password {settings.agent_password} (kept in {kept_in})"


def main(settings: Settings) -> int:
    """``ivr desk``: the desk alone, for an Asterisk that runs already. Without
    IVR_AMI_SECRET and IVR_AGENT_PASSWORD it uses the sandbox's (``ivr asterisk up``)."""
    kept_in = None
    if not settings.ami_secret or not (settings.agent_password or settings.desk_agents):
        from dialplan.sandbox import Sandbox
        sandbox = Sandbox()
        if not sandbox.root.is_dir():
            print("ivr desk: set IVR_AMI_SECRET and IVR_DESK_AGENTS (or IVR_AGENT_PASSWORD), "
                  "or start the sandbox first: ivr asterisk up", file=sys.stderr)
            return 2
        given = settings
        settings = sandbox_settings(settings, sandbox)
        settings = dataclasses.replace(settings, ami_secret=given.ami_secret or settings.ami_secret,
                                       agent_password=given.agent_password
                                       or settings.agent_password)
        if not (given.agent_password or sandbox.agent_password_given):
            kept_in = str(sandbox.secrets_file)
    try:
        ensure_desk_safe(settings)
    except InsecureConfiguration as exc:
        print(f"ivr desk: {exc}", file=sys.stderr)
        return 2
    accounts = demo_accounts(settings)
    asyncio.run(serve_desk_until_stopped(
        settings, lambda url: print(credentials_banner(url, settings, accounts, kept_in),
                                    flush=True), accounts))
    return 0
