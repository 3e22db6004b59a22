"""How the operator stops taking work on SIGTERM: the status queue and the stop flag that stops kopf."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
from kubetune_operator import main
from kubetune_operator.config import OperatorConfig
from kubetune_operator.main import StopFlag, run_kopf
from kubetune_operator.reconcile.finetunejob import StatusQueue

WAIT = 5.0  # seconds; a bound for the threads under test, never reached when they work


class RecordingSync:
    """A sync that records what it synced and can hold one job until released."""

    def __init__(self, hold: str | None = None) -> None:
        self.hold = hold
        self.started: list[str] = []
        self.finished: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, namespace: str, job_name: str, job: Mapping[str, Any] | None) -> None:
        self.started.append(job_name)
        if job_name == self.hold:
            self.holding.set()
            assert self.release.wait(WAIT)
        self.finished.append(job_name)


def test_status_queue_ignores_work_enqueued_after_stop() -> None:
    sync = RecordingSync()
    queue = StatusQueue(sync, workers=2)
    queue.stop()
    queue.enqueue("ns", "late")
    queue.join(WAIT)
    assert queue.idle()
    assert sync.started == []


def test_status_queue_stop_drops_pending_work_and_join_waits_for_running_work() -> None:
    sync = RecordingSync(hold="running")
    queue = StatusQueue(sync, workers=1)
    queue.enqueue("ns", "running")
    assert sync.holding.wait(WAIT)
    queue.enqueue("ns", "pending")  # the only worker is busy: this one waits in the queue
    queue.stop()
    assert not queue.idle()  # "running" is still in progress
    threading.Timer(0.2, sync.release.set).start()
    queue.join(WAIT)
    assert sync.finished == ["running"]  # join returned only after the running sync finished
    assert sync.started == ["running"]  # the pending one was dropped
    assert queue.idle()


def test_status_queue_before_stop_syncs_a_job_queued_many_times_once() -> None:
    # The contrast for the tests above: work enqueued before stop() is synced.
    sync = RecordingSync(hold="first")
    queue = StatusQueue(sync, workers=1)
    queue.enqueue("ns", "first")
    assert sync.holding.wait(WAIT)
    for _ in range(3):
        queue.enqueue("ns", "second")
    sync.release.set()
    deadline = time.monotonic() + WAIT
    while not queue.idle() and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.stop()
    queue.join(WAIT)
    assert sync.finished == ["first", "second"]


@pytest.fixture
def fake_kopf(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """kopf.operator replaced by a coroutine that runs until its asyncio stop flag is set."""
    seen: dict[str, Any] = {"running": threading.Event(), "calls": 0}

    async def operator(*, stop_flag: asyncio.Event, **_: Any) -> None:
        seen["calls"] += 1
        seen["running"].set()
        await stop_flag.wait()

    monkeypatch.setattr(main.kopf, "operator", operator)
    return seen


def test_setting_the_stop_flag_from_another_thread_wakes_kopf(fake_kopf: dict[str, Any]) -> None:
    stop = StopFlag()
    kopf_thread = threading.Thread(target=run_kopf, args=(OperatorConfig.from_env({}), stop), daemon=True)
    kopf_thread.start()
    assert fake_kopf["running"].wait(WAIT)
    stop.set()
    kopf_thread.join(WAIT)
    assert not kopf_thread.is_alive(), "kopf's asyncio waiter was not woken by StopFlag.set()"
    assert stop.is_set()
    stop.set()  # after kopf has stopped (its loop closed) setting it again is harmless


def test_a_stop_flag_set_before_kopf_starts_keeps_kopf_from_running(fake_kopf: dict[str, Any]) -> None:
    stop = StopFlag()
    stop.set()
    run_kopf(OperatorConfig.from_env({}), stop)
    assert fake_kopf["calls"] == 0


def test_stop_flag_is_a_threading_event_without_kopf() -> None:
    stop = StopFlag()
    assert not stop.wait(0.01)
    threading.Timer(0.05, stop.set).start()
    assert stop.wait(WAIT)
