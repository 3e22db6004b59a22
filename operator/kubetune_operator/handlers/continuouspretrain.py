"""Kopf handlers for ContinuousPretrain: one daemon per resource runs the reconcile loop.

A daemon (not a timer) because the poll interval is per resource (spec.trigger.pollIntervalSeconds)
and a schedule slot may come sooner. Child FineTuneJob events and spec changes wake the daemon
early; all reconciles of one resource therefore run one at a time, in its daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from kubetune_api import constants
from kubetune_operator import metrics
from kubetune_operator.config import OperatorConfig
from kubetune_operator.reconcile import continuouspretrain as reconcile

KIND = "ContinuousPretrain"
# After an unexpected error (API server or storage hiccup), try again after this long.
ERROR_RETRY_SECONDS = 30.0

_wakeups: dict[tuple[str, str], asyncio.Event] = {}
_identity = OperatorConfig.from_env().identity


def _wakeup(namespace: str, name: str) -> asyncio.Event:
    return _wakeups.setdefault((namespace, name), asyncio.Event())


def _reconcile_once(
    namespace: str, name: str, poll_interval: float, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> float:
    """One reconcile in a worker thread; returns the seconds until the next one."""
    started = time.monotonic()
    now = datetime.now(UTC)
    try:
        result = reconcile.reconcile_named(namespace, name, instance=_identity, now=now)
    except ValidationError as error:
        # Reported as Ready=False/InvalidSpec; a spec change wakes the daemon.
        logger.warning("invalid spec: %s", error)
        metrics.RECONCILE_ERRORS.labels(KIND, "InvalidSpec").inc()
        return poll_interval
    except Exception as error:  # keep the loop alive: report, count and retry
        logger.exception("reconcile failed: %s", error)
        metrics.RECONCILE_ERRORS.labels(KIND, type(error).__name__).inc()
        return ERROR_RETRY_SECONDS
    finally:
        metrics.RECONCILE_DURATION.labels(KIND).observe(time.monotonic() - started)
    if result is None:
        return poll_interval
    for outcome in result.finished:
        metrics.CPT_RUNS.labels(namespace, name, outcome).inc()
    if result.status.current_model is not None:
        metrics.CPT_GENERATION.labels(namespace, name).set(result.status.current_model.generation)
    if result.pending_documents is not None:
        metrics.CPT_NEW_DOCUMENTS.labels(namespace, name).set(result.pending_documents)
    return reconcile.seconds_until_next_check(result, poll_interval, now)


@kopf.daemon(constants.GROUP, constants.VERSION, constants.CONTINUOUSPRETRAIN_PLURAL, cancellation_timeout=10)
async def continuous_pretrain_daemon(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    namespace = namespace or ""  # a ContinuousPretrain is namespaced: kopf always passes one
    wakeup = _wakeup(namespace, name)
    try:
        while not stopped:
            wakeup.clear()
            poll_interval = float((spec.get("trigger") or {}).get("pollIntervalSeconds", 300))
            delay = await asyncio.to_thread(_reconcile_once, namespace, name, poll_interval, logger)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
    finally:
        _wakeups.pop((namespace, name), None)
        for gauge in (metrics.CPT_GENERATION, metrics.CPT_NEW_DOCUMENTS):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)


@kopf.on.event(constants.GROUP, constants.VERSION, constants.CONTINUOUSPRETRAIN_PLURAL)
async def continuous_pretrain_changed(
    namespace: str | None, name: str, meta: kopf.Meta, status: kopf.Status, **_: Any
) -> None:
    """A spec change (suspend, approvedRun, trigger, ...) is acted on at once, not at the next poll."""
    if meta.get("generation") != status.get("observedGeneration"):
        _wake(namespace or "", name)


@kopf.on.event(
    constants.GROUP,
    constants.VERSION,
    constants.FINETUNEJOB_PLURAL,
    labels={constants.LABEL_CONTINUOUSPRETRAIN: kopf.PRESENT},
)
async def continuous_pretrain_run_changed(namespace: str | None, meta: kopf.Meta, **_: Any) -> None:
    """A run's phase or metrics changed: let its ContinuousPretrain gate it now."""
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == KIND and owner.get("controller"):
            _wake(namespace or "", owner["name"])


def _wake(namespace: str, name: str) -> None:
    # Called only from async handlers, i.e. on the event loop that owns the asyncio.Event.
    event = _wakeups.get((namespace, name))
    if event is not None:
        event.set()
