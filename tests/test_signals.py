"""SIGINT and SIGTERM stop the project's long-running commands (ivr/signals.py)."""
from __future__ import annotations

import asyncio
import os
import signal

import pytest

from ivr.signals import STOP_SIGNALS, stop_event


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_either_stop_signal_sets_the_event(sig):
    loop = asyncio.get_running_loop()
    try:
        stop = stop_event()
        assert not stop.is_set()
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(stop.wait(), 5)
    finally:
        for each in STOP_SIGNALS:
            loop.remove_signal_handler(each)
