"""Independent controllers against one endpoint: what ``--workers`` relies on (docs/scale-out.md).

Each worker of a run has its own ``AimdControl``; the endpoint's throttling is a token bucket they
share. Simulated in 1 ms steps, with sends and answers in the same step (a short round trip, so
the paced rate, not the window, is what binds).
"""

from __future__ import annotations

import random

from fanout._retry import AimdControl

CAPACITY = 400.0
BURST = 40.0
STEP = 0.001


def _simulate(starts: list[float], seconds: float, seed: int = 7) -> tuple[list[int], list[int]]:
    """Requests each controller got accepted, over the run and over its last five seconds."""
    rng = random.Random(seed)
    controls = [AimdControl(64) for _ in starts]
    owed = [0.0] * len(starts)
    accepted = [0] * len(starts)
    late = [0] * len(starts)
    tokens = BURST
    order = list(range(len(starts)))
    for step in range(int(seconds / STEP)):
        now = step * STEP
        tokens = min(BURST, tokens + CAPACITY * STEP)
        rng.shuffle(order)
        for index in order:
            if now < starts[index]:
                continue
            control = controls[index]
            owed[index] += (control.rate or 1e9) * STEP
            while owed[index] >= 1:
                owed[index] -= 1
                epoch = control.on_send(now)
                if tokens >= 1:
                    tokens -= 1
                    control.on_success(now)
                    accepted[index] += 1
                    if now >= seconds - 5:
                        late[index] += 1
                else:
                    control.on_overload(epoch, now)
    return accepted, late


def test_workers_that_start_together_share_the_endpoint_evenly_and_use_all_of_it() -> None:
    accepted, late = _simulate([0.0, 0.0], seconds=20)
    assert sum(late) >= 0.9 * CAPACITY * 5  # together they send at what the endpoint takes
    assert min(late) / max(late) >= 0.8  # and neither starves the other
    assert min(accepted) / max(accepted) >= 0.8


def test_a_worker_that_starts_late_still_gets_a_share_and_the_total_holds() -> None:
    _, late = _simulate([0.0, 1.0], seconds=20)
    assert sum(late) >= 0.9 * CAPACITY * 5
    assert min(late) > 0  # held back, not shut out: the driver deals it less meanwhile
