"""MLflow bookkeeping; the only module that uses mlflow, imported lazily (about 2 s) where it is needed.

One experiment per study, one run per training job. A job's run is found again by its `job` tag, so
a rerun continues (after a resume) or replaces (after a fresh start) its own run: never two runs.
`Tracking` drives a job's run from a worker thread, so that MLflow's import and writes overlap training.
"""
from __future__ import annotations

import math
import os
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import unquote, urlsplit

URI_ENV = "SPARSENETS_TRACKING_URI"
COMMIT_ENV = "SPARSENETS_GIT_COMMIT"
T = TypeVar("T")


def git_commit() -> str:
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """SQLite answers 'database is locked' under many writers: back off and try again."""
    from mlflow.exceptions import MlflowException

    for i in range(attempts):
        try:
            return fn()
        except MlflowException as e:
            if "database is locked" not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.5 * 2**i)
    raise AssertionError("unreachable")


def _artifact_root(uri: str) -> str | None:
    """Artifacts beside a SQLite store; a server decides its own artifact root."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def init_store(uri: str, experiments: list[str]) -> None:
    """Create the store (schema migration) and every experiment once, before jobs fan out.

    An unreachable store fails here within seconds: MLflow's own retries (meant for rate limits)
    would keep the whole DAG waiting for minutes before saying so. Messages never show a password.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        _probe(uri)
        client = MlflowClient(uri)
        for name in experiments:
            if client.get_experiment_by_name(name) is None:
                client.create_experiment(name, artifact_location=_artifact_root(uri))
    except MlflowException as e:
        raise RuntimeError(redact(f"cannot use the MLflow tracking store {uri}: {e}", uri)) from None
    except Exception as e:  # noqa: BLE001 - connection errors come in many types
        raise RuntimeError(redact(f"cannot reach the MLflow tracking store {uri} ({type(e).__name__}: {e}); "
                                  f"check tracking.uri in config.yaml or ${URI_ENV}", uri)) from None


def _probe(uri: str, timeout: int = 10) -> None:
    """One connection attempt with a timeout: any answer from a server, or a database session."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        import requests

        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
    elif scheme.split("+")[0] in ("postgresql", "mysql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": timeout})
        try:
            engine.connect().close()
        finally:
            engine.dispose()


def redact(text: str, uri: str) -> str:
    """`text` with the password of `uri` (if it has one) replaced by ***."""
    password = urlsplit(uri).password
    if not password:
        return text
    return text.replace(password, "***").replace(unquote(password), "***")


class RunTracker:
    """The MLflow run of one job."""

    def __init__(self, uri: str, experiment: str, job: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        self.uri, self.job = uri, job
        exp = _retry(lambda: self.client.get_experiment_by_name(experiment))
        if exp is None:
            exp_id = _retry(lambda: self.client.create_experiment(experiment, artifact_location=_artifact_root(uri)))
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.run_id: str | None = None
        self.logged: set[int] = set()  # epochs already in the run: a resumed job logs each epoch once

    def start(self, tags: Mapping[str, Any], params: Mapping[str, Any], resume_run_id: str | None = None) -> str:
        """Continue `resume_run_id` if it is alive; else replace every earlier run of this job."""
        from mlflow.entities import Param

        if resume_run_id and self._alive(resume_run_id):
            self.run_id = resume_run_id
            _retry(lambda: self.client.update_run(resume_run_id, status="RUNNING"))
            history = _retry(lambda: self.client.get_metric_history(resume_run_id, "test_acc"))
            self.logged = {m.step for m in history}
            return resume_run_id
        for old in self._runs_of_job():
            _retry(lambda: self.client.delete_run(old))
        all_tags = {"job": self.job, "mlflow.runName": self.job, "git_commit": git_commit(),
                    **{k: str(v) for k, v in tags.items()}}
        run = _retry(lambda: self.client.create_run(self.experiment_id, run_name=self.job,
                                                    tags=all_tags))
        self.run_id = run.info.run_id
        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(plist), 100):
            _retry(lambda: self.client.log_batch(self.run_id, params=plist[i:i + 100]))
        self.logged = set()
        return self.run_id

    def log_epoch(self, row: Mapping[str, Any], step: int) -> None:
        """One batch per epoch (many writers locking SQLite per value fail; batches do not)."""
        from mlflow.entities import Metric

        if step in self.logged:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in row.items() if k != "epoch" and _is_number(v)]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=metrics))
        self.logged.add(step)

    def log_summary(self, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items()]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def log_artifacts(self, paths: list[str | os.PathLike]) -> None:
        for p in paths:
            _retry(lambda: self.client.log_artifact(self.run_id, str(p)))

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            _retry(lambda: self.client.set_terminated(self.run_id, status=status))

    def _alive(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == "active" and run.data.tags.get("job") == self.job

    def _runs_of_job(self) -> list[str]:
        runs = _retry(lambda: self.client.search_runs([self.experiment_id], f"tags.job = '{self.job}'"))
        return [r.info.run_id for r in runs]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Tracking:
    """A job's MLflow run, driven from one worker thread, so that MLflow's import (about 2 s), its store
    and every write overlap training instead of delaying it. Calls return at once (a Future) and run in
    order; `close` waits for them all and raises the first failure. Without a URI nothing is tracked."""

    def __init__(self, uri: str | None, experiment: str, job: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow") if uri else None
        self._calls: list[Future] = []
        if self._pool is not None:
            self._tracker = self._pool.submit(RunTracker, uri, experiment, job)
            self._calls.append(self._tracker)

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Future | None:
        """Queue `RunTracker.<method>(*args, **kwargs)`."""
        if self._pool is None:
            return None
        call = self._pool.submit(lambda: getattr(self._tracker.result(), method)(*args, **kwargs))
        self._calls.append(call)
        return call

    def close(self, status: str) -> None:
        if self._pool is None:
            return
        self("finish", status)
        try:
            for call in self._calls:
                call.result()
        finally:
            self._pool.shutdown()


__all__ = ["RunTracker", "Tracking", "git_commit", "init_store", "redact"]
