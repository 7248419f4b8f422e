"""The runner's batching: concurrent requests share one call; a failing call spares the requests that did not
cause it, except for shared errors (a store that is down), which fail every request of the call at once."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from ml_ops.serving.runner import ModelRunner


class StoreDown(RuntimeError):
    pass


def run_concurrently(runner: ModelRunner, values: list[float], entered: threading.Event, gate: threading.Event):
    async def main():
        first = asyncio.ensure_future(runner.predict({"x": np.array([values[0]])}, 1))
        while not entered.is_set():  # the runner's thread now holds the first call, blocked on the gate
            await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(runner.predict({"x": np.array([v])}, 1)) for v in values[1:]]
        await asyncio.sleep(0.05)
        gate.set()  # the rest were queued meanwhile: they go together in the next call
        return await asyncio.gather(first, *rest, return_exceptions=True)

    return asyncio.run(main())


@pytest.mark.parametrize("shared", [True, False])
def test_a_failing_call_fails_all_its_requests_only_for_shared_errors(shared):
    entered, gate, calls = threading.Event(), threading.Event(), []

    def score(columns, n):
        entered.set()
        gate.wait(5)
        calls.append(columns["x"].tolist())
        if 3.0 in calls[-1]:
            raise StoreDown("store down") if shared else ValueError("row 3 is bad")
        return columns["x"] * 10

    runner = ModelRunner(score, name="t", threads=None, shared_errors=(StoreDown,) if shared else ())
    out = run_concurrently(runner, [1.0, 2.0, 3.0, 4.0], entered, gate)
    assert out[0][0].tolist() == [10.0]
    if shared:  # one call for the three queued requests, and all three fail with the store's error
        assert calls == [[1.0], [2.0, 3.0, 4.0]]
        assert all(isinstance(o, StoreDown) for o in out[1:])
    else:  # the failed call is retried request by request: only the bad one fails
        assert calls == [[1.0], [2.0, 3.0, 4.0], [2.0], [3.0], [4.0]]
        assert out[1][0].tolist() == [20.0] and isinstance(out[2], ValueError) and out[3][0].tolist() == [40.0]
