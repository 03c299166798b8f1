"""``ivr serve --workers N``: N processes share the FastAGI port, one core each.

One Python process runs its event loop on one core; a hotline that must use them all runs
several. Every worker binds the same address with ``SO_REUSEPORT``, and the kernel spreads
the incoming connections (Asterisk's calls) over them. The parent process starts the
embedded reference membership service once, when ``IVR_MEMBERSHIP_URL`` is unset, and
points every worker at it; it then waits, and on SIGINT or SIGTERM (or when a worker dies)
stops the workers, each of which drains its calls as ``ivr serve`` does.

Workers share the call-record file (one ``O_APPEND`` write per batch, ``ivr.records``)
and the lockout store (SQLite in WAL mode, or Redis when configured: ``ivr.lockout``).
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import signal
import time
from dataclasses import replace

from .config import Settings
from .signals import stop_event

log = logging.getLogger(__name__)

READY_SECONDS = 60.0
# Beyond the drain limit, the time a worker gets to close before it is killed.
STOP_SECONDS = 15.0


def raise_open_files_limit() -> int:
    """Every call is a socket: allow as many as the system lets this process have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _worker(settings: Settings, index: int, ready) -> None:
    """A worker process: the FastAGI server of ``ivr serve``, on a shared port."""
    from .privacy import configure_logging
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # until the server takes it (reopen)
    configure_logging(settings.log_level)
    raise_open_files_limit()
    try:
        asyncio.run(_serve_worker(settings, index, ready))
    except KeyboardInterrupt:   # a second Ctrl-C while draining
        pass


async def _serve_worker(settings: Settings, index: int, ready) -> None:
    from .app import serve_until_stopped
    if settings.metrics_port:     # one registry per worker, each on its own port
        settings = replace(settings, metrics_port=settings.metrics_port + index)
    await serve_until_stopped(
        settings, lambda server: ready.put((index, os.getpid(), server.port)), reuse_port=True)
    log.info("worker %d stopped", index)


async def _supervise(settings: Settings, workers: int) -> int:
    stop = stop_event()
    loop = asyncio.get_running_loop()
    runner = None
    processes: list = []

    def reopen_records() -> None:       # logrotate signals the parent: tell every worker
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, reopen_records)
    if settings.uses_embedded_membership:
        from .membership.reference import run_reference_service
        runner = await run_reference_service(
            settings.embedded_membership_host, settings.embedded_membership_port,
            settings.membership_db, settings.membership_token)
        log.info("embedded reference membership service at %s",
                 settings.effective_membership_url)
    shared = replace(settings, membership_url=settings.effective_membership_url)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    processes[:] = [ctx.Process(target=_worker, args=(shared, i, ready), name=f"ivr-worker-{i}")
                 for i in range(workers)]
    try:
        for process in processes:
            process.start()
        started = await _wait_ready(ready, processes, stop)
        if started is None:
            return 1
        print(f"hotline FastAGI server on {settings.agi_host}:{settings.agi_port} (route "
              f"/hotline) in {workers} worker processes (pids "
              f"{', '.join(str(pid) for pid in started)}), membership at "
              f"{shared.membership_url}", flush=True)
        while not stop.is_set():
            if any(not p.is_alive() for p in processes):
                log.error("a worker process exited; stopping the others")
                return 1
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
        log.info("shutting down %d workers", workers)
        return 0
    finally:
        await loop.run_in_executor(None, _stop_processes, processes,
                                   settings.drain_seconds + STOP_SECONDS)
        if runner is not None:
            await runner.cleanup()


async def _wait_ready(ready, processes, stop: asyncio.Event) -> list[int] | None:
    """The workers' pids once every one listens; None if one died or we were stopped."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    pids: dict[int, int] = {}
    while len(pids) < len(processes):
        if stop.is_set() or loop.time() > deadline or \
                any(p.exitcode is not None for p in processes):
            log.error("the workers did not all start")
            return None
        try:
            index, pid, _port = await loop.run_in_executor(None, ready.get, True, 0.2)
        except Exception:   # queue.Empty
            continue
        pids[index] = pid
    return [pids[i] for i in sorted(pids)]


def _stop_processes(processes, seconds: float) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()          # SIGTERM: the worker drains its calls
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0.1))
        if process.is_alive():
            process.kill()
            process.join()


def serve(settings: Settings, workers: int) -> int:
    """Run ``workers`` FastAGI server processes on one port until SIGINT or SIGTERM."""
    if workers < 1:
        raise ValueError("--workers needs at least 1")
    if settings.agi_port == 0:
        raise ValueError("--workers needs a fixed IVR_AGI_PORT (the workers share it)")
    raise_open_files_limit()
    return asyncio.run(_supervise(settings, workers))
