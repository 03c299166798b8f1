"""A simulated day of the waiting loop (``python -m bench.waiting``): a replayed arrival
pattern of a hotline (08:00-20:00), agents with exponential handle times, and the
dialplan's loop as it is: each caller leaves Asterisk's queue for every announcement
(position, expected wait, and after IVR_CALLBACK_OFFER_AFTER the offer and its short
wait), re-enters with the priority of the first join; callbacks' placeholders never
leave it. Prints the figures of bench/RESULTS.md "Waiting for an agent":
- the expected wait said on entry against the wait each answered caller had;
- time the announcements add to callers' waits (agent free while the caller was out);
- callers and callbacks overtaken by callers who joined later.
Deterministic (seeded); pure Python, a few seconds.
"""
from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass, field

from ivr.waiting.estimate import QueueStats, expected_wait

HOURLY = [70, 110, 140, 130, 110, 90, 100, 120, 110, 80, 60, 40]   # calls per hour from 08:00
AGENTS = 9
HANDLE_S = 240.0          # mean handle time (exponential)
ANNOUNCE_EVERY = 30.0     # IVR_WAIT_ANNOUNCE_SECONDS
SPEECH_S = 6.0            # position and expected wait, said
OFFER_S = 8.0             # the offer (5 s) and the wait for a key (3 s), after OFFER_AFTER
OFFER_AFTER = 60.0
CALLBACK_SHARE = 0.25     # of the callers offered, who take the callback (once)
HISTORY_S = 3600.0
STAY_AT = 3               # a caller this near the head stays in the queue (no more rounds)


@dataclass(order=True)
class Waiting:
    joined: float
    id: int = field(compare=False)
    callback: bool = field(default=False, compare=False)
    back_at: float = field(default=0.0, compare=False)    # out of the queue until then
    estimate: float | None = field(default=None, compare=False)
    offered: bool = field(default=False, compare=False)


def simulate(seed: int = 13, loop: bool = True, stay_at: int = STAY_AT) -> dict:
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for hour, rate in enumerate(HOURLY):
        t = hour * 3600.0
        while True:
            t += rng.expovariate(rate / 3600.0)
            if t >= (hour + 1) * 3600.0:
                break
            arrivals.append(t)
    handles = [rng.expovariate(1 / HANDLE_S) for _ in arrivals]
    takes_callback = [rng.random() < CALLBACK_SHARE for _ in arrivals]
    free_at = [0.0] * AGENTS
    answered: list[tuple[float, float]] = []       # (answered at, handle)
    waiting: list[Waiting] = []
    waits, errors, extra, overtaken = {}, [], 0.0, {"caller": 0, "callback": 0}
    next_arrival, now, step = 0, 0.0, 0.5
    end = len(HOURLY) * 3600.0 + 4 * 3600.0
    while now < end and (next_arrival < len(arrivals) or waiting):
        while next_arrival < len(arrivals) and arrivals[next_arrival] <= now:
            i = next_arrival
            next_arrival += 1
            recent = [h for at, h in answered if at >= now - HISTORY_S]
            stats = QueueStats(len(recent), statistics.fmean(recent) if recent else None)
            w = Waiting(arrivals[i], i)
            position = 1 + len(waiting)
            w.estimate = expected_wait(position, AGENTS, stats, HANDLE_S)
            busy = sum(1 for f in free_at if f > now)
            if loop and not (busy < AGENTS and position == 1):   # no word when one is free
                w.back_at = now + SPEECH_S
            waiting.append(w)
        # each caller in the loop leaves at every interval for the announcement, but the
        # ones at the head of the line (by first join) stay
        ranked = sorted(waiting)
        for rank, w in enumerate(ranked, start=1):
            if loop and not w.callback and w.back_at <= now and rank > stay_at and \
                    int((now - w.joined) / ANNOUNCE_EVERY) != int((now - step - w.joined)
                                                                  / ANNOUNCE_EVERY):
                out = SPEECH_S
                if now - w.joined >= OFFER_AFTER:
                    out += OFFER_S
                    if not w.offered and takes_callback[w.id]:
                        w.callback = True       # the placeholder holds its place from now
                        out = 0.0
                    w.offered = True
                w.back_at = now + out
        for a in range(AGENTS):
            if free_at[a] > now or not waiting:
                continue
            in_line = sorted(w for w in waiting if w.callback or w.back_at <= now)
            if not in_line:
                head = min(waiting)
                extra += step              # an agent is free, the head is announcing
                continue
            w = in_line[0]
            head = min(waiting)
            if w is not head:
                overtaken["callback" if head.callback else "caller"] += 1
            waiting.remove(w)
            waits[w.id] = (now - w.joined, w.estimate, w.callback)
            free_at[a] = now + handles[w.id]
            answered.append((now, handles[w.id]))
        now += step
    for wait, estimate, _cb in waits.values():
        if estimate is not None and wait >= 1:
            errors.append(estimate - wait)
    abs_errors = sorted(abs(e) for e in errors)
    return {
        "callers": len(arrivals), "answered": len(waits), "waited": len(errors),
        "mean_wait_s": statistics.fmean(w for w, _e, _c in waits.values()),
        "estimate_mae_s": statistics.fmean(abs_errors),
        "estimate_median_abs_s": statistics.median(abs_errors),
        "estimate_p90_abs_s": abs_errors[int(0.9 * len(abs_errors))],
        "estimate_bias_s": statistics.fmean(errors),
        "within_60s": sum(1 for e in abs_errors if e <= 60) / len(abs_errors),
        "agent_idle_while_head_announced_s": extra,
        "callers_overtaken": overtaken["caller"], "callbacks_overtaken": overtaken["callback"],
    }


def main() -> None:
    for stay_at in (0, 1, 2, 3):
        figures = simulate(loop=True, stay_at=stay_at)
        print(f"stay at <= {stay_at}: overtaken {figures['callers_overtaken']}, "
              f"agent idle while the head announced {figures['agent_idle_while_head_announced_s']} s, "
              f"mean wait {figures['mean_wait_s']:.1f} s")
    with_loop = simulate(loop=True)
    without = simulate(loop=False)
    print("with announcements:   ", {k: round(v, 3) if isinstance(v, float) else v
                                     for k, v in with_loop.items()})
    print("music only (no loop): ", {k: round(v, 3) if isinstance(v, float) else v
                                     for k, v in without.items()})
    print(f"mean wait added by the announcements: "
          f"{with_loop['mean_wait_s'] - without['mean_wait_s']:+.1f} s")


if __name__ == "__main__":
    main()
