"""Background work: a failure is logged with what was being done, and stop() ends all."""
import asyncio
import logging

from ivr.background import Background


async def test_a_failure_is_logged_and_stop_ends_what_still_runs(caplog):
    log = logging.getLogger("test.background")
    work = Background(log, "desk")

    async def fails():
        raise OSError("store down")

    work.spawn(fails(), "queue history")
    work.spawn(asyncio.sleep(3600), "a long wait")
    other = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    await asyncio.sleep(0.01)
    assert len(work) == 1
    assert "desk: queue history failed: store down" in caplog.text
    await work.stop(other, None)
    assert len(work) == 0 and other.cancelled()
