"""How the project's long-running commands learn they must stop: SIGINT (Ctrl-C) or
SIGTERM (a service manager, ``docker stop``) sets an event the command waits on."""
from __future__ import annotations

import asyncio
import signal
from typing import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(handler: Callable[[], None]) -> None:
    """Call ``handler`` in the running loop at every SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, handler)


def stop_event() -> asyncio.Event:
    """An event set at the first SIGINT or SIGTERM."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    return stop
