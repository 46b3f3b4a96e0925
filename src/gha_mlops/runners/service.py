"""``gha-mlops runners serve``: the intake, the event worker and the scaler loop, wired
together; stopped cleanly by SIGTERM/SIGINT (runners keep running their jobs: the state
remembers them for the next start)."""

from __future__ import annotations

import queue
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType

from gha_mlops.github.port import RunnersPort
from gha_mlops.runners.backends.base import RunnerBackend
from gha_mlops.runners.config import RunnersConfig
from gha_mlops.runners.intake import Intake, IntakeServer
from gha_mlops.runners.observe import Metrics, log
from gha_mlops.runners.scaler import Scaler, armed_failpoints
from gha_mlops.runners.state import State

BATCH = 500  # webhooks applied in one state transaction at most


@dataclass
class Service:
    config: RunnersConfig
    state: State
    scaler: Scaler
    intake: Intake
    server: IntakeServer
    threads: list[threading.Thread] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, config: RunnersConfig, *, github: RunnersPort,
              backends: Mapping[str, RunnerBackend], port: int | None = None,
              state: State | None = None, environ: Mapping[str, str] | None = None) -> Service:
        """Wire the service over the ports it is given (:func:`gha_mlops.bootstrap.
        runner_service` builds the real ones; tests pass fakes); it closes them when it stops.
        ``state`` defaults to the configuration's file; ``environ`` is the environment the CLI
        read, for ``$GHA_MLOPS_FAILPOINTS``: nothing here reads the process's own."""
        state = state if state is not None else State(config.state_path)
        metrics = Metrics()
        scaler = Scaler(config, state, github, backends, metrics=metrics,
                        failpoints=armed_failpoints(environ or {}))
        intake = Intake(secret=config.webhook_secret, path=config.webhook_path,
                        max_body=config.max_body, first_delivery=state.claim_delivery,
                        forget_delivery=state.release_deliveries, metrics=metrics)
        server = IntakeServer(intake, config.listen_host,
                              config.listen_port if port is None else port,
                              health=lambda: _health(scaler))
        return cls(config, state, scaler, intake, server)

    def start(self) -> Service:
        # The intake's threads answer in milliseconds only if a busy scaler pass hands the
        # interpreter lock over more often than every 5 ms (Python's default).
        sys.setswitchinterval(0.001)
        self.threads = [threading.Thread(target=self._work, name="events", daemon=True),
                        threading.Thread(target=self.scaler.run, name="scaler", daemon=True)]
        for t in self.threads:
            t.start()
        self.server.start()
        log(20, f"serving webhooks on http://{self.config.listen_host}:{self.server.port}"
            f"{self.config.webhook_path} for {self.config.scope}; pools: "
            + ", ".join(p.name for p in self.config.pools))
        return self

    def _work(self) -> None:
        """Apply accepted webhooks to the state: whatever queued up meanwhile goes in one
        transaction, so a burst costs one commit and one pass, not one per delivery. Each
        event is applied in its own savepoint (see ``State.apply_jobs``): a bad one is logged
        and skipped, and its delivery id is remembered only when it was applied."""
        events = self.intake.events
        while True:
            try:
                batch = [events.get(timeout=0.2)]
            except queue.Empty:
                if self._stopping.is_set():
                    return  # stopped, and everything accepted has been applied
                continue
            while len(batch) < BATCH:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            try:
                self.scaler.on_job_events([e.job for e in batch],
                                          deliveries=[e.delivery for e in batch])
            except Exception as err:  # e.g. the database locked: none of the batch applied
                self.state.release_deliveries(*(e.delivery for e in batch))
                self.scaler.metrics.errors.labels("internal").inc()
                log(40, f"internal error applying {len(batch)} webhook(s): {err!r}; their "
                    "redeliveries will be taken", delivery=batch[0].delivery)

    def stop(self) -> None:
        self.server.stop()  # no more webhooks; the worker applies those accepted, then ends
        self._stopping.set()
        for t in self.threads:
            if t.name == "events":
                t.join(timeout=30)
        self.scaler.close()
        for t in self.threads:
            t.join(timeout=10)
        for backend in self.scaler.backends.values():
            backend.close()
        self.scaler.github.close()
        self.state.close()
        log(20, "stopped; runners keep running their jobs and are picked up at the next start")

    def serve_forever(self, install_signals: bool = True) -> None:
        done = threading.Event()
        if install_signals:
            def on_signal(signum: int, frame: FrameType | None) -> None:
                done.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, on_signal)
        self.start()
        try:
            while not done.wait(0.5):
                pass
        finally:
            self.stop()


def _health(scaler: Scaler) -> tuple[bool, str]:
    problems = []
    for name, backend in scaler.backends.items():
        h = backend.health()
        if not h.ok:
            problems.append(f"backend {name}: {h.detail}")
    return (not problems, "; ".join(problems) or "ok")


