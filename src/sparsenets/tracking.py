"""MLflow bookkeeping; the only module that uses mlflow, imported lazily (about 2 s) where it is needed.

One experiment per study, one run per training job. A job's run is found again by its `job` tag, so
a rerun continues (after a resume) or replaces (after a fresh start) its own run: never two runs.
Laid out for comparing in the UI (README, MLflow): each run nested under a parent run per method on a
dataset and model (created by mlflow_init before the fan-out), named by what differs (`phew d0.018 s0`),
with the nominal density as a param, the claims' numbers as final metrics, its dataset as an input, system
metrics and its files as artifacts; a `summary` run per study holds the figures and claims.
`Tracking` drives a job's run from a worker thread, so that MLflow's import and writes overlap training.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import unquote, urlsplit

from .io import disk_full
from .study import ORIGINAL

URI_ENV = "SPARSENETS_TRACKING_URI"
PRESET_ENV = "SPARSENETS_PRESET"  # set by the workflow (workflow/rules/common.smk)
OUTAGE_ENV = "SPARSENETS_TRACKING_OUTAGE_LIMIT_S"
DEFAULT_OUTAGE_LIMIT_S = 600.0
T = TypeVar("T")


def git_commit() -> str:
    """The code's commit as `sparsenets.provenance` states it (with `-dirty`, or `unknown`)."""
    from .provenance import commit

    return commit()


class TrackingOutage(RuntimeError):
    """The tracking store stayed unreachable (or locked) for longer than the outage limit."""


def outage_limit_s() -> float:
    """How long a job keeps retrying an unreachable store: $SPARSENETS_TRACKING_OUTAGE_LIMIT_S
    (config key `tracking.outage_limit_s`, exported by the workflow), 600 s by default."""
    raw = os.environ.get(OUTAGE_ENV) or str(DEFAULT_OUTAGE_LIMIT_S)
    try:
        limit = float(raw)
    except ValueError:
        limit = -1.0
    if not limit > 0:
        raise ValueError(f"{OUTAGE_ENV} (tracking.outage_limit_s) must be a positive number of seconds, got {raw!r}")
    return limit


_worker = threading.local()  # give_up: an Event a stopping job sets, so that its worker stops retrying


def _retry(fn: Callable[[], T]) -> T:
    """Call `fn`, and call it again while the store is out (server down, SQLite locked) for up to the outage
    limit. Every call it wraps is idempotent (metrics carry their own timestamp and step, so a resent batch
    that had already arrived is not stored twice), so a retry after a lost answer does no harm."""
    give_up = getattr(_worker, "give_up", None) or threading.Event()
    limit, t0 = None, time.monotonic()
    for i in itertools.count():
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - transient errors come in many types
            if not _transient(e):
                raise
            limit = limit or outage_limit_s()
            if time.monotonic() - t0 > limit:
                raise TrackingOutage(f"no answer for {limit:g} s, the outage limit (config key tracking.outage_limit_s, "
                                     f"or ${OUTAGE_ENV}); last error: {type(e).__name__}: {e}") from None
            if give_up.wait(min(0.25 * 2**i, 5.0)):
                raise TrackingOutage(f"gave up waiting for the store: the job is stopping; last error: "
                                     f"{type(e).__name__}: {e}") from None
    raise AssertionError("unreachable")


def _transient(e: BaseException) -> bool:
    """Errors a store recovers from: SQLite locked, a server that does not answer or answers 429/502/503/504,
    a database connection lost (MLflow's TEMPORARILY_UNAVAILABLE, not raised for SQLite files)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(e, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout)):
        return True
    if not isinstance(e, MlflowException):
        return False
    msg = str(e)
    return ("database is locked" in msg or re.match(r"API request to \S+ failed with (timeout )?exception", msg) is not None
            or re.search(r"failed with error code (429|502|503|504)\b", msg) is not None
            or (e.error_code == "TEMPORARILY_UNAVAILABLE" and "sqlite" not in msg.lower()))


def store_client(uri: str) -> Any:
    """An MlflowClient. For a SQLite file it is made under a lock beside the file (`mlflow.db.lock`): the first
    client of a new store migrates its schema (exclusive lock), and jobs migrating one store at once fail
    ("table already exists"); the others wait for it, then find the store migrated (shared lock)."""
    import fcntl

    from mlflow.tracking import MlflowClient

    db = sqlite_file(uri)
    if db is None:
        return MlflowClient(uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if db.exists() and db.stat().st_size else fcntl.LOCK_EX)
        return MlflowClient(uri)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


PROXY = "mlflow-artifacts:"  # artifact URIs a server resolves against its --artifacts-destination (README, MLflow)


def _artifact_root(uri: str, experiment: str) -> str | None:
    """A SQLite store's experiments keep their artifacts at `mlflow-artifacts:/{experiment}`, a location
    relative to the store: `mlartifacts/{experiment}/` beside it, wherever the results folder is copied
    (`mlflow ui ... --artifacts-destination results/mlartifacts` serves them). A server decides its own."""
    if uri.startswith("sqlite:///"):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", experiment):
            raise ValueError(f"study name {experiment!r} is not a folder name (letters, digits, _ . - only)")
        return f"{PROXY}/{experiment}"
    return None


def artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """Where a run's artifacts lie on this machine: a relative (`mlflow-artifacts:`) location of a SQLite
    store, resolved against the store's folder as it is now; None for any other store or location
    (a server's, or an absolute `file://` one of a store made before locations were relative)."""
    if not (uri.startswith("sqlite:///") and artifact_uri.startswith(PROXY)):
        return None
    return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / artifact_uri.removeprefix(PROXY).lstrip("/")


def log_artifact(client: Any, uri: str, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    """`path` into the run's artifacts: a relative location of a SQLite store is written straight into its
    folder (only a server resolves `mlflow-artifacts:`), any other through MLflow."""
    run_uri = _retry(lambda: client.get_run(run_id)).info.artifact_uri
    local = artifact_dir(uri, run_uri)
    if local is None:
        _retry(lambda: client.log_artifact(run_id, str(path), artifact_path=artifact_path))
        return
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    LocalArtifactRepository(str(local)).log_artifact(str(path), artifact_path)


def init_store(uri: str, experiments: list[str], parents: list[str] | tuple[str, ...] = ()) -> None:
    """Create the store (schema migration), every experiment and every parent run once, before jobs fan
    out: many jobs starting at once then find their parent instead of racing to create it.

    `parents`: study/dataset/model/method keys. Runs left RUNNING by dead jobs are marked KILLED
    (`reap_stale_runs`). An unreachable store fails here within seconds: MLflow's
    own retries (meant for rate limits) would keep the whole DAG waiting for minutes before saying so.
    Messages never show a password.
    """
    from mlflow.exceptions import MlflowException

    try:
        _probe(uri)
        client = store_client(uri)
        ids = {name: experiment_id(client, name, uri) for name in experiments}
        for key in parents:
            study = key.split("/")[0]
            if study not in ids:
                raise ValueError(f"parent run {key!r} names study {study!r}, which is not among the experiments "
                                 f"{', '.join(experiments)}")
            parent_run(client, ids[study], key)
        reap_stale_runs(client, list(ids.values()))
    except MlflowException as e:
        if (full := disk_full(e, sqlite_file(uri) or uri)) is not None:
            raise full from None
        raise RuntimeError(redact(f"cannot use the MLflow tracking store {uri}: {e}", uri)) from None
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - connection errors come in many types
        if (full := disk_full(e, sqlite_file(uri) or uri)) is not None:
            raise full from None
        raise RuntimeError(redact(f"cannot reach the MLflow tracking store {uri} ({type(e).__name__}: {e}); "
                                  f"check tracking.uri in config.yaml or ${URI_ENV}", uri)) from None


def experiment_id(client: Any, name: str, uri: str) -> str:
    """The study's experiment, created if missing, tagged for MLflow's classic ML view and described."""
    exp = _retry(lambda: client.get_experiment_by_name(name))
    if exp is None:
        try:
            exp_id = _retry(lambda: client.create_experiment(name, artifact_location=_artifact_root(uri, name)))
        except Exception:  # noqa: BLE001 - another job created it first: use that one
            exp = _retry(lambda: client.get_experiment_by_name(name))
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    tags = {**ML_VIEW, NOTE: f"Study {name}: one parent run per dataset, model and method (named by the method), "
                             "with its density x seed runs nested under it (run names: method, density, seed; the "
                             "job's path is the tag `job`). The run `summary` holds the study's figures and claims."}
    have = dict(exp.tags) if exp is not None else {}
    for k, v in tags.items():
        if have.get(k) != v:
            _retry(lambda: client.set_experiment_tag(exp_id, k, v))
    return exp_id


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


ML_VIEW = {"mlflow.experimentKind": "custom_model_development"}  # the UI's "Machine learning" kind (README, MLflow)
NOTE = "mlflow.note.content"  # the description the UI shows on a run's or an experiment's page (markdown)
PARENT = "mlflow.parentRunId"  # nests a run under another in the UI
PARENT_KEY = "parent_key"  # on a parent run: study/dataset/model/method
RUN_COLOR = "mlflow.runColor"  # the colour the UI draws a run in (its colour picker sets this tag)
SYSTEM_METRICS_INTERVAL_S = 15.0  # one sample of CPU, memory, disk, network (and GPU): about 5 ms (README, MLflow)


def run_color(method: str) -> str:
    """The method's colour in the figures (`styles`), as the UI's run colour: lines and points of one method
    look alike in MLflow's charts and in the report."""
    from .styles import style

    return style(method).color


def short_method(method: str) -> str:
    """A method's name in run names, short enough for the UI's name column: `random-like-imp` is `rl-imp`
    (the tag `method` keeps the full name, for filters)."""
    return re.sub(r"^random-like-", "rl-", method)


def run_name(method: str, density: str, seed: int | str, variant: str = "") -> str:
    """What differs between runs first, so the UI's narrow name column shows it: `phew d0.018 s0`,
    `imp reinit d0.25 s0`, `rl-imp d0.0625 s0`. The dataset and model are the parent's; the job's full
    path is the tag `job`."""
    method = short_method(method)
    kind = f"{method} {variant}" if variant and variant != ORIGINAL else method
    return f"{kind} d{density} s{seed}"


CURVE = "by_density/"  # the parents' chart-ready metrics: their own section of the UI's Chart view (README)
CURVE_STEP = 1_000_000  # a curve's step is the density in parts per million (0.01801 -> 18010)


def density_curves(client: Any, experiment_id: str) -> dict[str, dict[str, int]]:
    """On each method's parent run, the seed-mean of its runs' `final_test_acc` at each density as one
    metric history, `by_density/final_test_acc` (`..._reinit` etc. per variant), step = density in ppm: the
    Chart view then draws accuracy against density, one line per method, with no chart to set up.
    Returns parent run id -> metric -> number of densities; a rerun logs nothing twice (same step, time 0)."""
    from mlflow.entities import Metric

    runs = _search_all(client, experiment_id, "attributes.status = 'FINISHED'")
    points: dict[tuple[str, str, int], list[float]] = {}
    for r in runs:
        parent, density = r.data.tags.get(PARENT), r.data.params.get("density")
        acc = r.data.metrics.get("final_test_acc")
        if parent and acc is not None and density and "job" in r.data.tags:
            variant = r.data.tags.get("variant", ORIGINAL)
            key = "final_test_acc" if variant in ("", ORIGINAL) else f"final_test_acc_{variant}"
            points.setdefault((parent, key, round(float(density) * CURVE_STEP)), []).append(acc)
    per_parent: dict[str, list[Any]] = {}
    for (parent, key, step), accs in sorted(points.items()):
        per_parent.setdefault(parent, []).append(Metric(CURVE + key, sum(accs) / len(accs), 0, step))
    for parent, metrics in per_parent.items():
        for i in range(0, len(metrics), 1000):
            _retry(lambda: client.log_batch(parent, metrics=metrics[i:i + 1000]))
    return {parent: dict(Counter(m.key for m in metrics)) for parent, metrics in per_parent.items()}


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """Every run that matches, across pages (a paper study has thousands)."""
    runs, token = [], None
    while True:
        page = _retry(lambda: client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token))
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def parent_run(client: Any, experiment_id: str, key: str) -> str:
    """The one parent run of `key` (study/dataset/model/method), created if missing.

    mlflow_init creates every parent before the jobs fan out; a job started without it creates its own,
    and jobs that did so at once settle on the oldest (start time, then id): each deletes every younger one
    it sees, so the last to look, who sees them all, leaves one (a child that picked a loser moves at its
    end: `RunTracker.finish`)."""
    found = _parents(client, experiment_id, key)
    if found:
        return found[0]
    study, dataset, model, method = key.split("/")
    tags = {PARENT_KEY: key, "study": study, "dataset": dataset, "model": model, "method": method,
            RUN_COLOR: run_color(method),
            NOTE: f"Method `{method}` on {dataset}/{model} (study {study}): its runs at each density and seed are "
                  f"nested under this one; `{CURVE}final_test_acc` is their seed-mean final test accuracy against "
                  "density (step = density in parts per million)."}
    run = _retry(lambda: client.create_run(experiment_id, tags=tags,
                                           run_name=f"{short_method(method)} {dataset}/{model}"))
    _unless_deleted(client, run.info.run_id, lambda: client.set_terminated(run.info.run_id, "FINISHED"))
    winner, *losers = _parents(client, experiment_id, key)
    for loser in losers:
        _unless_deleted(client, loser, lambda loser=loser: client.delete_run(loser))
    return winner


def _unless_deleted(client: Any, run_id: str, change: Callable[[], Any]) -> None:
    """Change a run that a racing job may be deleting meanwhile (it found an older parent): a deleted run
    needs no change, the lookup after it finds the one that stays."""
    from mlflow.exceptions import MlflowException

    try:
        _retry(change)
    except MlflowException:
        if client.get_run(run_id).info.lifecycle_stage != "deleted":
            raise


def _parents(client: Any, experiment_id: str, key: str) -> list[str]:
    """The live parent runs of `key`, oldest first (ties by id: every job picks the same)."""
    runs = _retry(lambda: client.search_runs([experiment_id], f"tags.{PARENT_KEY} = '{key}'"))
    return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]


OWNER = "owner"  # on a training run: the process that drives it (JSON), to tell a dead job's run from a live one
KILLED_BY = "killed_by"  # why a run is KILLED: the signal that stopped its job, or `stale: ...` (reap_stale_runs)
SLURM_DONE = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
              "TIMEOUT")


def owner() -> dict[str, Any]:
    """This process as a run's owner: host, pid, the pid's start time (pids are reused), pid namespace, and
    the SLURM job it runs in (if any)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _started(os.getpid()),
            "pidns": _pid_namespace(), "slurm_job": os.environ.get("SLURM_JOB_ID", "")}


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat), "" where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def owner_alive(tag: str) -> bool | None:
    """Whether the owner a run's `owner` tag names still runs: False only when that is certain.

    On this host (and pid namespace): its pid is gone, or taken by a process started at another time. On
    another host: its SLURM job has ended (squeue says so, or no longer knows the job). Else None: unknown."""
    try:
        who = json.loads(tag)
    except (TypeError, ValueError):
        return None
    if who.get("host") == socket.gethostname() and who.get("pidns") == _pid_namespace() and who.get("start"):
        return _started(int(who["pid"])) == who["start"]
    if who.get("slurm_job") and shutil.which("squeue"):
        return _slurm_job_alive(str(who["slurm_job"]))
    return None


def _slurm_job_alive(job: str) -> bool | None:
    try:
        done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode == 0:
        states = done.stdout.split()
        return None if not states else not all(st in SLURM_DONE for st in states)
    return False if "Invalid job id" in done.stderr else None


def reap_stale_runs(client: Any, experiment_ids: list[str]) -> list[str]:
    """Mark KILLED every RUNNING run whose owner is certainly dead (a job SIGKILLed, or lost with its node),
    so the UI never shows a dead run as live; the ids of those marked. A run without an `owner` tag, or
    whose owner cannot be checked from here (another host, no SLURM), is left as it is; a live job's run
    is never touched. The owner is read again just before marking, so a rerun that has just taken the run
    over keeps it."""
    reaped = []
    runs = _retry(lambda: client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=50000))
    for run in runs:
        tag = run.data.tags.get(OWNER)
        if tag is None or owner_alive(tag) is not False:
            continue
        now = _retry(lambda: client.get_run(run.info.run_id))
        if now.info.status != "RUNNING" or now.data.tags.get(OWNER) != tag:
            continue
        why = f"stale: its job died (owner {tag}); found by a later job"
        _retry(lambda: client.set_tag(run.info.run_id, KILLED_BY, why))
        _retry(lambda: client.set_terminated(run.info.run_id, "KILLED", end_time=int(time.time() * 1000)))
        reaped.append(run.info.run_id)
    return reaped


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the file's SHA-256: MLflow's dataset digest (the same file, the same digest)."""
    from .provenance import sha256

    return sha256(path)[:16]


def provenance_tags() -> dict[str, str]:
    """What every run states about where it came from: the commit (`<sha>`, `<sha>-dirty` or `unknown`), whether
    the tree was dirty, a warning when the commit does not identify the code, and the preset the workflow ran
    ($SPARSENETS_PRESET; absent outside the workflow). The data file is the dataset's (`log_dataset`)."""
    from . import provenance

    sha = provenance.commit()
    tags = {"git_commit": sha, "git_dirty": str(provenance.is_dirty(sha)).lower(), "mlflow.source.git.commit": sha}
    if provenance.warning(sha):
        tags["provenance_warning"] = provenance.warning(sha)
    if os.environ.get(PRESET_ENV):
        tags["preset"] = os.environ[PRESET_ENV]
    return tags


class RunTracker:
    """The MLflow run of one job, nested under its method's parent run."""

    def __init__(self, uri: str, experiment: str, job: str) -> None:
        self.client = store_client(uri)
        self.uri, self.job = uri, job
        self.experiment_id = experiment_id(self.client, experiment, uri)
        self.run_id: str | None = None
        self.parent_key: str | None = None
        self.parent_id: str | None = None
        self.monitor: Any = None  # MLflow's system metrics sampler, while the run is open
        self.logged: set[int] = set()  # epochs already in the run: a resumed job logs each epoch once

    def start(self, tags: Mapping[str, Any], params: Mapping[str, Any], resume_run_id: str | None = None, *,
              name: str | None = None, note: str = "", parent: str | None = None, start_ms: int | None = None,
              device: str = "cpu") -> str:
        """Continue `resume_run_id` if it is alive; else replace every earlier run of this job.

        `parent`: the study/dataset/model/method key of the parent run; `start_ms`: when the job started
        (the worker gets here after MLflow's import, possibly after the first epochs); `device`: whose memory
        the system metrics sample besides the host's."""
        from mlflow.entities import Param

        self.parent_key = parent
        self.parent_id = parent_run(self.client, self.experiment_id, parent) if parent else None
        me = json.dumps(owner(), sort_keys=True)
        if resume_run_id and self._alive(resume_run_id):
            self.run_id = resume_run_id
            self._take_over(resume_run_id, me)
            history = _retry(lambda: self.client.get_metric_history(resume_run_id, "test_acc"))
            self.logged = {m.step for m in history}
            self._start_system_metrics(device, resume=True)
            return resume_run_id
        for old in self._runs_of_job():
            _retry(lambda: self.client.delete_run(old))
        colour = {RUN_COLOR: run_color(str(tags["method"]))} if "method" in tags else {}
        all_tags = {"job": self.job, OWNER: me, "mlflow.runName": name or self.job, **provenance_tags(), **colour,
                    NOTE: note, **({PARENT: self.parent_id} if parent else {}),
                    **{k: str(v) for k, v in tags.items()}}
        run = _retry(lambda: self.client.create_run(self.experiment_id, start_time=start_ms, run_name=name or self.job,
                                                    tags=all_tags))
        self.run_id = run.info.run_id
        for twin in set(self._runs_of_job()) - {self.run_id}:  # created by a retry whose answer was lost
            _retry(lambda: self.client.delete_run(twin))
        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(plist), 100):
            _retry(lambda: self.client.log_batch(self.run_id, params=plist[i:i + 100]))
        self.logged = set()
        self._start_system_metrics(device, resume=False)
        return self.run_id

    def _take_over(self, run_id: str, me: str) -> None:
        """A resumed job's run: owned by this process (first, so that no job reaps it), RUNNING again; why it
        had been killed is kept as `resumed_after`."""
        _retry(lambda: self.client.set_tag(run_id, OWNER, me))
        killed_by = _retry(lambda: self.client.get_run(run_id)).data.tags.get(KILLED_BY)
        if killed_by:
            _retry(lambda: self.client.set_tag(run_id, "resumed_after", killed_by))
            _retry(lambda: self.client.delete_tag(run_id, KILLED_BY))
        _retry(lambda: self.client.update_run(run_id, status="RUNNING"))

    def log_epoch(self, row: Mapping[str, Any], step: int, timestamp_ms: int | None = None) -> None:
        """One batch per epoch (many writers locking SQLite per value fail; batches do not), stamped with
        the time the epoch ended. The mask's density is not a curve: it is the final metric actual_density."""
        from mlflow.entities import Metric

        if step in self.logged:
            return
        now = timestamp_ms or int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in row.items()
                   if k not in ("epoch", "density") and _is_number(v)]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=metrics))
        self.logged.add(step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags learnt after the start (e.g. `damaged_checkpoint`: a checkpoint the job set aside)."""
        for k, v in tags.items():
            _retry(lambda: self.client.set_tag(self.run_id, k, str(v)))

    def log_summary(self, values: Mapping[str, float]) -> None:
        """Final metrics (step 0); values that are not finite numbers are left out."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # a job killed after logging them, before removing its checkpoint, resumes here: log each once
        have = _retry(lambda: self.client.get_run(self.run_id)).data.metrics
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if _is_number(v) and have.get(k) != float(v)]
        if metrics:
            _retry(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def log_dataset(self, path: str | os.PathLike, name: str, sizes: Mapping[str, int]) -> None:
        """The run's dataset as an MLflow input: its name, the digest of its file, its file and split sizes."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        source = json.dumps({"uri": Path(path).resolve().as_uri(), **sizes})
        from .provenance import data_file

        known = data_file(path)  # the data file's name and full digest as tags too: they filter and show as columns
        _retry(lambda: self.client.set_tag(self.run_id, "data_file", known["file"]))
        _retry(lambda: self.client.set_tag(self.run_id, "data_sha256", known["sha256"]))
        ds = Dataset(name=name, digest=known["sha256"][:16], source_type="local", source=source,
                     profile=json.dumps(dict(sizes)))
        inputs = [DatasetInput(ds, [InputTag("mlflow.data.context", "training")])]
        for attempt in range(5):  # jobs logging the same dataset at once race to insert it: the loser tries again
            try:                  # and finds it (MLflow looks a dataset up by experiment, name and digest first)
                return _retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs))
            except MlflowException as e:
                if attempt == 4 or not re.search(r"UNIQUE constraint failed|duplicate key", str(e)):
                    raise
                time.sleep(0.1 * (attempt + 1))

    def log_artifacts(self, paths: list[str | os.PathLike]) -> None:
        for p in paths:
            log_artifact(self.client, self.uri, self.run_id, p)

    def finish(self, status: str = "FINISHED") -> None:
        """Stop the system metrics (their last window logged), settle the parent, end the run now."""
        if self.run_id is None:
            return
        if self.monitor is not None:
            self.monitor.finish()
            self.monitor = None
        if self.parent_key:
            winner = _parents(self.client, self.experiment_id, self.parent_key)
            if winner and winner[0] != self.parent_id:  # another job's parent won a race (parent_run)
                _retry(lambda: self.client.set_tag(self.run_id, PARENT, winner[0]))
        _retry(lambda: self.client.set_terminated(self.run_id, status=status, end_time=int(time.time() * 1000)))

    def _start_system_metrics(self, device: str, resume: bool) -> None:
        self.monitor = system_metrics(self.run_id, self.uri, device, resume)
        self.monitor.start()

    def _alive(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = _retry(lambda: self.client.get_run(run_id))
        except MlflowException:  # deleted for good, or another store: not an outage (_retry waits those out)
            return False
        return run.info.lifecycle_stage == "active" and run.data.tags.get("job") == self.job

    def _runs_of_job(self) -> list[str]:
        runs = _retry(lambda: self.client.search_runs([self.experiment_id], f"tags.job = '{self.job}'"))
        return [r.info.run_id for r in runs]


def system_metrics(run_id: str, uri: str, device: str = "cpu", resume: bool = False,
                   interval_s: float = SYSTEM_METRICS_INTERVAL_S) -> Any:
    """MLflow's system metrics sampler for a run (needs psutil; NVIDIA GPUs through nvidia-ml-py when it is
    installed, else this job's own CUDA memory through torch), which also logs the window a short run ends in."""
    from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class CudaMemory(BaseMetricsMonitor):
        """This process's memory on its CUDA device (MLflow's GPU monitor needs nvidia-ml-py)."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

        def collect_metrics(self) -> None:
            import torch

            self._metrics[f"gpu_{self.index}_memory_allocated_megabytes"].append(
                torch.cuda.memory_allocated(self.index) / 1e6)
            self._metrics[f"gpu_{self.index}_memory_reserved_megabytes"].append(
                torch.cuda.memory_reserved(self.index) / 1e6)

        def aggregate_metrics(self) -> dict[str, float]:
            return {k: round(sum(v) / len(v), 1) for k, v in self._metrics.items()}

    class Monitor(SystemMetricsMonitor):
        def finish(self) -> None:
            """Stop sampling, then log the window the run's end cut short (all of a run shorter than
            one interval): MLflow's own finish drops it."""
            if self._process is None:
                return
            self._shutdown_event.set()
            self._process.join()
            self._process = None
            self.collect_metrics()
            self.publish_metrics(self.aggregate_metrics())
            _retry(self.mlflow_logger.flush)

    monitor = Monitor(run_id, sampling_interval=interval_s, resume_logging=resume, tracking_uri=uri)
    if device.startswith("cuda") and not any(isinstance(m, GPUMonitor) for m in monitor.monitors):
        import torch

        monitor.monitors.append(CudaMemory(torch.device(device).index or 0))
    return monitor


def summary_run(uri: str, study: str, figures: list[str | os.PathLike], claims_md: str | os.PathLike) -> str:
    """The study's `summary` run: its figures and claims.md as artifacts, its rows of the verdict table as
    the run's description; first, each method's accuracy-by-density curve onto its parent (`density_curves`). A rerun replaces it (found again by its `summary` tag; only training runs have a
    `job` tag)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = experiment_id(client, study, uri)
    density_curves(client, exp)

    def runs_of_job() -> list[str]:
        return [r.info.run_id for r in _retry(lambda: client.search_runs([exp], f"tags.summary = '{study}'"))]

    for old in runs_of_job():
        _retry(lambda: client.delete_run(old))
    rows = [line for line in Path(claims_md).read_text().splitlines()
            if line.startswith(("| Study |", "|---|")) or line.startswith(f"| {study} |")]
    note = (f"The figures of study {study} and the claims judged on it (claims.md in the artifacts holds the numbers "
            "behind each verdict and how each claim is tested).\n\n" + "\n".join(rows))[:7900]
    tags = {"summary": study, "study": study, NOTE: note, **provenance_tags()}
    run_id = _retry(lambda: client.create_run(exp, run_name="summary", tags=tags)).info.run_id
    for twin in set(runs_of_job()) - {run_id}:  # created by a retry whose answer was lost
        _retry(lambda: client.delete_run(twin))
    for f in figures:
        log_artifact(client, uri, run_id, f, "figures")
    log_artifact(client, uri, run_id, claims_md)
    _retry(lambda: client.set_terminated(run_id, "FINISHED"))
    return run_id


def experiment_ids(uri: str, names: list[str]) -> dict[str, str]:
    """Each study's experiment id (the report links each claim to its runs in the UI: #/experiments/{id})."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {name: experiment_id(client, name, uri) for name in names}


def log_to_job_run(uri: str, experiment: str, job: str, values: Mapping[str, float]) -> str | None:
    """Final metrics measured after a job's training (its sensitivity areas) onto that job's run, found by
    its `job` tag; None when the store has no such run. Stamped at time 0 and step 0, so a rerun that
    logs the same values again adds no row."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = _retry(lambda: client.get_experiment_by_name(experiment))
    runs = _retry(lambda: client.search_runs([exp.experiment_id], f"tags.job = '{job}'")) if exp else []
    if not runs:
        return None
    metrics = [Metric(k, float(v), 0, 0) for k, v in values.items() if _is_number(v)]
    _retry(lambda: client.log_batch(runs[0].info.run_id, metrics=metrics))
    return runs[0].info.run_id


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Tracking:
    """A job's MLflow run, driven from one worker thread, so that MLflow's import (about 2 s), its store
    and every write overlap training instead of delaying it. Calls return at once (a Future) and run in
    order; `close` waits for them all and raises the first failure. Without a URI nothing is tracked.

    While the store is out (a tracking server restarting), the worker retries the call at the head of the
    queue and the calls behind it wait their turn: training goes on, nothing is lost or logged twice. Past
    the outage limit (`outage_limit_s`) the job fails, naming the store and the limit."""

    def __init__(self, uri: str | None, experiment: str, job: str) -> None:
        self._give_up = threading.Event()  # set by a stopping job: its worker stops retrying the store
        self._pool = (ThreadPoolExecutor(1, thread_name_prefix="mlflow", initializer=setattr,
                                         initargs=(_worker, "give_up", self._give_up)) if uri else None)
        self._calls: list[Future] = []
        self._uri = uri or ""
        self._outage: TrackingOutage | None = None  # once past the limit, every later call fails at once
        if self._pool is not None:
            outage_limit_s()  # a bad limit fails the job now, not in the middle of an outage
            if urlsplit(self._uri).scheme in ("http", "https"):  # our retries, not MLflow's 4-minute backoff:
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # resume as soon as it is back
            self._tracker = self._pool.submit(self._named, RunTracker, uri, experiment, job)
            self._calls.append(self._tracker)

    def _named(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, an outage past the limit reported with the store's URI (never its password)."""
        if self._outage is not None:
            raise self._outage
        try:
            return fn(*args, **kwargs)
        except TrackingOutage as e:
            self._outage = TrackingOutage(redact(f"the MLflow tracking store {self._uri} is out: {e}", self._uri))
            raise self._outage from None
        except Exception as e:
            full = disk_full(e, getattr(e, "filename", None) or sqlite_file(self._uri) or self._uri)
            if full is not None:  # a SQLite store or its artifacts on a full disk: one line naming the file
                raise full from e
            raise

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Future | None:
        """Queue `RunTracker.<method>(*args, **kwargs)`; after an outage past the limit, raise it (the job fails)."""
        if self._pool is None:
            return None
        if self._outage is not None:
            raise self._outage
        call = self._pool.submit(lambda: self._named(getattr(self._tracker.result(), method), *args, **kwargs))
        self._calls.append(call)
        return call

    def close(self, status: str, timeout: float | None = None) -> bool:
        """End the run with `status` once every queued call is done, raising the first failure. With `timeout`
        (a job stopping on a signal), give up after that many seconds and return False: the store is out, and
        the run, left RUNNING, is marked KILLED by a later job (`reap_stale_runs`)."""
        if self._pool is None:
            return True
        try:
            if self._outage is None:
                self("finish", status)
            if wait(self._calls, timeout).not_done:
                self._give_up.set()
                return False
            for call in self._calls:
                call.result()
            return True
        finally:
            given_up = self._give_up.is_set()
            self._pool.shutdown(wait=not given_up, cancel_futures=given_up)


__all__ = ["KILLED_BY", "OWNER", "RunTracker", "Tracking", "TrackingOutage", "artifact_dir", "density_curves",
           "git_commit", "init_store", "log_artifact", "log_to_job_run", "outage_limit_s", "owner", "owner_alive",
           "parent_run", "reap_stale_runs", "redact", "run_name", "short_method", "summary_run", "system_metrics"]
