"""The hotline application: the services a call needs, their lifecycle, and the FastAGI
route handler that runs one call from its header block to its call record."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
import signal
from dataclasses import replace
from typing import AsyncContextManager, AsyncIterator, Callable

from prompts import Catalog, load_catalog

from .agi.channel import AgiCall
from .agi.codec import CommandError, ProtocolError
from .agi.listener import parse_allow_list
from .agi.server import AgiServer
from .agi.session import AgiSession, SessionClosed
from .call import CallerHungUp
from .config import Settings
from .dialog import Dialog
from .exposure import ensure_safe
from .hotline import CallState, FlowSettings, Hotline
from .lockout import REDIS_CONNECTIONS, Lockout, lockout_store
from .membership.breaker import CircuitBreaker
from .membership.client import POOL_LIMIT as MEMBERSHIP_POOL, MembershipClient
from .metrics import Metrics, serve_metrics
from .service_modes import ServiceModes, ServiceState
from .signals import on_stop_signals
from .names import INHERITED, Outcome, Var
from .privacy import mask_caller
from .records import CallRecord, RecordWriter, now_iso
from .store import open_store
from .store.forwarder import RecordForwarder
from .waiting.route import ROUTE as WAIT_ROUTE, WaitRoute

log = logging.getLogger(__name__)

ROUTE = "hotline"
# Time allowed for leaving the channel variables once the call is over.
FINISH_SECONDS = 5.0


def prompt_durations(settings: Settings) -> dict[str, int]:
    """Prompt lengths in ms from the rendering manifest (empty before prompts are rendered)."""
    try:
        from prompts.render import load_durations
    except ImportError:
        return {}
    return load_durations(settings.sounds_dir)


class HotlineApp:
    def __init__(self, settings: Settings, membership: MembershipClient, lockout: Lockout,
                 records: RecordWriter, catalog: Catalog | None = None,
                 durations: dict[str, int] | None = None,
                 metrics: Metrics | None = None,
                 service: ServiceModes | None = None, store=None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.service = service
        self.membership = membership
        self.lockout = lockout
        self.records = records
        self.catalog = catalog or load_catalog()
        self.durations = durations or {}
        self.flow_settings = FlowSettings(lookup_timeout=settings.lookup_timeout,
                                          hold_prompt_after=settings.hold_prompt_after,
                                          announcement=settings.announcement)
        # The waiting loop's words and callbacks (ivr/waiting): the store keeps callbacks.
        self.waiting = WaitRoute(settings, self.catalog, store)
        if settings.announcement and settings.announcement not in self.catalog:
            raise ValueError(f"IVR_ANNOUNCEMENT={settings.announcement!r} is not a prompt id")

    async def handle(self, session: AgiSession) -> None:
        """The ``hotline`` route: one call, always ending in variables and a record."""
        headers = session.headers
        call_id = headers.get("agi_uniqueid") or f"ivr-{uuid.uuid4()}"
        caller = headers.get("agi_callerid", "unknown")
        record = CallRecord(call_id=call_id, caller=mask_caller(caller),
                            channel=headers.get("agi_channel", ""),
                            extension=headers.get("agi_extension", ""))
        call = AgiCall(session)
        dialog = Dialog(call, self.catalog, menu_timeout=self.settings.menu_timeout,
                        first_digit_timeout=self.settings.first_digit_timeout,
                        inter_digit_timeout=self.settings.inter_digit_timeout)
        dialog.durations = self.durations
        flow = self.flow_settings
        if self.service is not None:     # the operator's live announcement and mode
            live = await self.service.current()
            flow = replace(flow, announcement=live.announcement, mode=live.mode.value)
        hotline = Hotline(dialog, self.membership, self.lockout, call_id=call_id,
                          caller=caller, settings=flow)
        state = hotline.state
        call_id_set = False
        try:
            await call.answer()
            # The dialplan's sign that this server took the call: without it (a server
            # down, draining, or gone before its first commands) it tries the next one.
            await call.set_variable(INHERITED + Var.CALL_ID, call_id)
            call_id_set = True
            if headers.get("agi_language") != "id":
                await call.set_variable("CHANNEL(language)", "id")
            await hotline.run()
        except CallerHungUp:
            state.outcome = Outcome.ABANDONED
        except SessionClosed as exc:
            state.outcome = Outcome.ABANDONED if session.hung_up else Outcome.ERROR
            log.info("call %s: session ended: %s", call_id, exc)
        except ProtocolError as exc:
            state.outcome = Outcome.ERROR
            log.warning("call %s: the FastAGI peer broke the protocol: %s", call_id, exc)
        except CommandError as exc:   # a reply from the peer, not a fault of this process
            state.outcome = Outcome.ERROR
            log.warning("call %s: the FastAGI peer refused a command: %s", call_id, exc)
        except Exception:
            state.outcome = Outcome.ERROR
            log.exception("call %s failed", call_id)
        finally:
            if state.outcome is None:  # cancelled: shutdown or the maximum call duration
                state.outcome = Outcome.ERROR
            await self._leave_variables(call, session, state, "" if call_id_set else call_id)
            self._write_record(record, state, dialog, call)

    async def _leave_variables(self, call: AgiCall, session: AgiSession, state: CallState,
                               call_id: str) -> None:
        """The outcome for the dialplan and the agents; ``call_id`` only when it could not
        be set right after the answer."""
        if session.closed:
            return
        verified = bool(state.verified_card)
        values = {
            Var.OUTCOME: state.outcome.value,
            Var.TRANSFER_REASON: state.transfer_reason.value if state.transfer_reason else "",
            Var.VERIFIED: "1" if verified else "0",
            Var.CARD: state.verified_card,
            Var.MEMBER_STATUS: state.member_status if verified else "",
        }
        if call_id:
            values[Var.CALL_ID] = call_id
        try:
            async with asyncio.timeout(FINISH_SECONDS):
                for name, value in values.items():
                    await call.set_variable(INHERITED + name, value)
        except Exception as exc:  # a stuck or broken peer: the record still gets written
            log.warning("call %s: could not leave channel variables: %s", call_id,
                        type(exc).__name__)

    def _write_record(self, record: CallRecord, state: CallState, dialog: Dialog,
                      call: AgiCall) -> None:
        record.ended_at = now_iso()
        record.outcome = state.outcome.value
        record.transfer_reason = state.transfer_reason.value if state.transfer_reason else None
        record.verified = bool(state.verified_card)
        record.member_status = state.member_status or None
        record.identifier_masked = state.identifier_masked or None
        record.participant_ref = (self.lockout.pseudonym(state.verified_card)
                                  if state.verified_card else None)
        record.menu_keys = dialog.menu_keys
        record.membership_latency_ms = state.membership_latency_ms
        record.membership_lookups = state.membership_lookups
        record.time_to_status_ms = state.time_to_status_ms
        record.audio_to_status_ms = state.audio_to_status_ms if self.durations else None
        record.missing_prompts = call.missing_sounds
        record.transcript = dialog.transcript
        self.records.write(record)
        self.metrics.call_ended(record)
        log.info("call %s ended: %s %s verified=%d lookups=%d", record.call_id, record.outcome,
                 record.transfer_reason or "-", record.verified, record.membership_lookups)


@contextlib.asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[HotlineApp]:
    """Everything a call needs, opened in order and closed in reverse: the embedded
    membership service (when no URL is configured), its client, the lockout store, the
    call-record writer and the forwarder of its records into the desk's store."""
    ensure_safe(settings)
    async with contextlib.AsyncExitStack() as stack:
        if settings.uses_embedded_membership:
            from .membership.reference import run_reference_service
            runner = await run_reference_service(
                settings.embedded_membership_host, settings.embedded_membership_port,
                settings.membership_db, settings.membership_token)
            stack.push_async_callback(runner.cleanup)
            log.info("embedded reference membership service at %s",
                     settings.effective_membership_url)
        membership = MembershipClient(settings.effective_membership_url,
                                      settings.membership_token,
                                      connect_timeout=settings.membership_connect_timeout,
                                      total_timeout=settings.lookup_timeout,
                                      breaker=CircuitBreaker(settings.breaker_failures,
                                                             settings.breaker_retry_seconds))
        await membership.start()
        stack.push_async_callback(membership.close)
        lockout = lockout_store(settings)
        stack.push_async_callback(lockout.close)
        await lockout.open()
        # The store's record forwarder stops after the writer has drained (exit order is
        # reverse), so that the last records of a run reach the store too.
        store = open_store(settings)
        stack.push_async_callback(store.close)
        outbox = settings.store_outbox if settings.call_records == "-" else None
        forwarder = RecordForwarder(store, outbox or settings.call_records)
        await forwarder.start()
        stack.push_async_callback(forwarder.stop)
        records = RecordWriter(settings.call_records, copy_to=outbox, on_written=forwarder.wake,
                               max_waiting=settings.records_max_waiting)
        stack.callback(records.close)
        metrics = Metrics()
        metrics.records, metrics.breaker = records, membership.breaker
        membership.observe = metrics.lookup_finished
        if settings.metrics_port:
            runner = await serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
            stack.push_async_callback(runner.cleanup)
        app = HotlineApp(settings, membership, lockout, records,
                         durations=prompt_durations(settings), metrics=metrics, store=store)
        app.service = ServiceModes(store, ServiceState(settings.announcement),
                                   known_prompts=app.catalog)
        yield app


_GC_SETTLED = False


def settle_garbage_collector() -> None:
    """Once per process, when everything long-lived is loaded: move it out of the cyclic
    collector's sight (``gc.freeze``), so that a full collection walks only the calls'
    objects; and make full collections rare. With 10,000 calls held, a full collection
    walks about 600,000 objects, the longest pause the server has (``bench/RESULTS.md``).
    By default one may run after every 10 collections of the middle generation once the
    objects that survived them add up to a quarter of the old ones; at peak that is every
    few seconds, because a command's future and reply survive a caller's think time. After
    1,000 middle collections instead (about a minute and a half at peak), the pause is rare
    and the cyclic garbage of the calls in between (little: calls end without cycles in
    the common paths) waits that long. The young generations keep their thresholds: a
    larger first one makes each collection of the middle one longer, not rarer."""
    global _GC_SETTLED
    if not _GC_SETTLED:
        _GC_SETTLED = True
        gc.collect()
        gc.freeze()
        young, middle, _old = gc.get_threshold()
        gc.set_threshold(young, middle, 1000)


# How often the young generations are collected on a timer (see young_collections).
YOUNG_GC_SECONDS = 0.05


async def young_collections() -> None:
    """Collect the young generations every ``YOUNG_GC_SECONDS``, whatever the allocation
    count says. In Python 3.11 freeing an old object lowers the count that triggers a young
    collection, so with thousands of calls ending old objects the young generation grows
    to hundreds of thousands of objects before it is collected: a 50 ms pause, measured.
    On a timer each collection finds what 50 ms made, and takes a millisecond or two."""
    while True:
        await asyncio.sleep(YOUNG_GC_SECONDS)
        gc.collect(1)


@contextlib.asynccontextmanager
async def running_server(settings: Settings, *, reuse_port: bool = False
                         ) -> AsyncIterator[tuple[AgiServer, HotlineApp]]:
    from .workers import raise_open_files_limit
    raise_open_files_limit()   # every call is a socket: thousands at a national peak
    allow = parse_allow_list(settings.agi_allow)
    async with running_services(settings) as app:
        settle_garbage_collector()
        collector = asyncio.get_running_loop().create_task(young_collections())
        server = AgiServer({ROUTE: app.handle, WAIT_ROUTE: app.waiting.handle},
                           header_timeout=settings.header_timeout,
                           header_max_bytes=settings.header_max_bytes,
                           reply_timeout=settings.reply_timeout,
                           max_call_seconds=settings.max_call_seconds, allow=allow,
                           max_connections=settings.max_connections,
                           other_sockets=MEMBERSHIP_POOL + REDIS_CONNECTIONS)
        app.metrics.server = server
        await server.start(settings.agi_host, settings.agi_port, reuse_port=reuse_port)
        try:
            yield server, app
        finally:
            collector.cancel()
            await server.close(settings.drain_seconds)


async def serve_until_stopped(settings: Settings, on_ready: Callable[[AgiServer], None], *,
                              reuse_port: bool = True,
                              beside: Callable[[], AsyncContextManager] | None = None) -> None:
    """Run the hotline until SIGINT or SIGTERM, then drain and stop; ``on_ready`` is told
    once the server listens (a banner, a worker's ready message). ``beside`` is another
    service run for as long (the agent desk, in ``ivr asterisk serve``).

    The port is bound with ``SO_REUSEPORT``, so that a new process can listen beside one
    that drains (a deploy without a gap). A second SIGINT or SIGTERM ends the drain at once.
    SIGHUP (logrotate's signal) reopens the call-record file."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    running: list[AgiServer] = []

    def stop_or_hurry() -> None:
        if stop.is_set() and running:
            log.warning("asked again to stop: ending the calls still in progress now")
            running[0].hurry()
        stop.set()

    on_stop_signals(stop_or_hurry)
    try:
        async with running_server(settings, reuse_port=reuse_port) as (server, app), \
                (beside() if beside else contextlib.nullcontext()):
            running.append(server)

            def reopen_records() -> None:
                log.info("SIGHUP: reopening the call-record file")
                app.records.reopen()

            loop.add_signal_handler(signal.SIGHUP, reopen_records)
            on_ready(server)
            await stop.wait()
            log.info("shutting down: draining calls for up to %.0f s (IVR_DRAIN_SECONDS)",
                     settings.drain_seconds)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
