"""Entry point: `python -m kubetune_operator`.

Credentials: in-cluster service account, else KUBECONFIG (or ~/.kube/config). Configuration:
environment variables, see config.py (e.g. KUBETUNE_TRAINER_IMAGE, KUBETUNE_WATCH_NAMESPACES).

Serves Prometheus metrics on OPERATOR_METRICS_PORT and /healthz + /readyz on
OPERATOR_HEALTH_PORT. With leader election on (the default), a replica first waits for the
Lease; only the leader runs kopf. A leader that cannot renew steps down and exits non-zero
so its pod restarts as a standby.

SIGTERM/SIGINT: kopf stops its watches and cancels its handlers; then the FineTuneJob pools and
the status queue stop taking work (API calls in flight finish, bounded by their request timeout),
the Lease thread stops, a leader releases the Lease, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf

from . import handlers, kube, metrics
from .config import OperatorConfig
from .handlers import finetunejob as finetunejob_handlers
from .leader import LeaseElector

logger = logging.getLogger("kubetune_operator")
KOPF_PREFIX = "kopf.kubetune.io"
EXIT_LOST_LEADERSHIP = 2


class Health:
    """What the probes report: live unless leadership was lost; ready once started (leader or standby)."""

    def __init__(self) -> None:
        self.role = "starting"
        self.lost_leadership = False

    def live(self) -> bool:
        return not self.lost_leadership

    def ready(self) -> bool:
        return self.role in {"leader", "standby"}


def serve_health(port: int, health: Health) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = {"/healthz": health.live, "/readyz": health.ready}.get(self.path)
            if ok is None:
                self.send_error(404)
                return
            healthy = ok()
            body = f"{'ok' if healthy else 'unhealthy'} role={health.role}\n".encode()
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log

    server = ThreadingHTTPServer(("", port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def _configure_kopf(config: OperatorConfig) -> None:
    @kopf.on.startup()
    def settings(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Handler state in our own annotations; the status schema is ours alone.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=KOPF_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
        # Phase-transition Events come from the reconciler; kopf posts only its warnings and errors.
        settings.posting.level = logging.WARNING
        settings.execution.max_workers = config.max_workers
        settings.networking.request_timeout = 60
        settings.watching.server_timeout = 600
        settings.watching.client_timeout = 660

    @kopf.on.login()
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)


def _wait_for_leadership(elector: LeaseElector, config: OperatorConfig, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            if elector.try_acquire_or_renew():
                return True
        except Exception:
            logger.warning("leader election round failed", exc_info=True)
        stop.wait(config.lease_renew_seconds)
    return False


def _keep_leadership(
    elector: LeaseElector, config: OperatorConfig, stop: threading.Event, health: Health
) -> None:
    last_renewed = time.monotonic()
    while not stop.wait(config.lease_renew_seconds):
        try:
            if elector.try_acquire_or_renew():
                last_renewed = time.monotonic()
                continue
        except Exception:
            logger.warning("lease renewal failed", exc_info=True)
        if time.monotonic() - last_renewed > config.lease_duration_seconds:
            logger.error("lost the lease %s/%s; stepping down", config.lease_namespace, config.lease_name)
            health.lost_leadership = True
            stop.set()


class StopFlag(threading.Event):
    """Set by SIGTERM/SIGINT, by a lost Lease, or once kopf has stopped; setting it also stops kopf."""

    def __init__(self) -> None:
        super().__init__()
        self._wake_kopf: Callable[[], None] | None = None

    def set(self) -> None:
        super().set()
        wake = self._wake_kopf
        if wake is not None:
            wake()


def run_kopf(config: OperatorConfig, stop: StopFlag) -> None:
    """kopf until SIGTERM/SIGINT (kopf's own handlers on its loop) or until `stop` is set.

    Not kopf.run(stop_flag=<threading.Event>): kopf waits for such a flag in a thread of the loop's
    default executor, and when a signal (not the flag) stops kopf, asyncio.run's shutdown waits for
    that thread forever. Here kopf's flag is an asyncio.Event that `stop.set()` sets through the loop.
    """

    async def operate() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: kopf has stopped already
                loop.call_soon_threadsafe(stopping.set)

        stop._wake_kopf = wake
        if stop.is_set():
            return
        await kopf.operator(
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            stop_flag=stopping,
        )

    try:
        asyncio.run(operate())
    except asyncio.CancelledError:
        pass
    finally:
        stop._wake_kopf = None


def _install_signal_handlers(stop: threading.Event) -> None:
    # Before and after kopf (standby, Lease release); while kopf runs its loop handles the signals.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


SHUTDOWN_GRACE_SECONDS = 10.0


def shutdown_workers() -> None:
    """Stop taking new reconcile work; let the API calls in flight finish (each bounded by its timeout)."""
    reconcile_stopped = threading.Thread(target=finetunejob_handlers.shutdown, name="shutdown", daemon=True)
    reconcile_stopped.start()
    reconcile_stopped.join(SHUTDOWN_GRACE_SECONDS)
    if reconcile_stopped.is_alive():
        logger.warning("reconcile threads still busy after %ss; exiting anyway", SHUTDOWN_GRACE_SECONDS)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf logs every handler call at INFO: thousands of lines per minute from pod events alone.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = OperatorConfig.from_env()
    kube.configure(max_connections=finetunejob_handlers.api_connections(config))
    finetunejob_handlers.configure(config)
    _configure_kopf(config)
    logger.info("handlers: %s", ", ".join(handlers.__all__))
    metrics.serve(config.metrics_port)
    health = Health()
    health_server = serve_health(config.health_port, health) if config.health_port else None

    stop = StopFlag()
    _install_signal_handlers(stop)
    elector = None
    lease_thread = None
    if config.leader_election:
        elector = LeaseElector(config)
        health.role = "standby"
        logger.info(
            "standing by for lease %s/%s as %s", config.lease_namespace, config.lease_name, config.identity
        )
        if not _wait_for_leadership(elector, config, stop):
            logger.info("stopped while standing by")
            return 0
        lease_thread = threading.Thread(
            target=_keep_leadership, args=(elector, config, stop, health), name="lease", daemon=True
        )
        lease_thread.start()
    health.role = "leader"
    logger.info(
        "leading as %s; watching %s", config.identity, ", ".join(config.namespaces) or "all namespaces"
    )
    try:
        run_kopf(config, stop)
    finally:
        logger.info("kopf stopped; shutting down")
        _install_signal_handlers(stop)  # the loop's handlers went with it; a second SIGTERM is a no-op
        stop.set()
        shutdown_workers()
        if lease_thread is not None:
            lease_thread.join(config.lease_renew_seconds + 35)  # a renewal in flight: its request timeout
        if health_server is not None:
            health_server.shutdown()
    if health.lost_leadership:
        return EXIT_LOST_LEADERSHIP
    if elector is not None:
        elector.release()
        logger.info("released lease %s/%s", config.lease_namespace, config.lease_name)
    logger.info("operator stopped")
    return 0
