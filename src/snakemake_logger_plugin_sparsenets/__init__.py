"""`snakemake --logger sparsenets`: a compact console (sparsenets.progress) instead of a block per job.

The console gets the stage, the jobs done and the time left (one line each `interval` seconds and at every
change of stage; on a terminal, one line updated in place), every warning and error in full, and
Snakemake's own summary lines; the whole log still goes to .snakemake/log/ (Snakemake's file handler).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from logging import INFO, LogRecord

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from sparsenets.progress import Progress

# Snakemake's info lines that the progress line replaces; any other one is printed
CHATTER = ("Select jobs to execute", "Execute ", "Building DAG", "Using shell", "Provided cores", "Provided resources",
           "Rules claiming more threads", "Job stats", "Waiting ", "host:", "Assuming unrestricted",
           "Finished jobid", "jobs (", "Touching output", "Removing temporary", "Activating", "Unlocking")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    interval: float = field(default=10.0, metadata={"help": "seconds between two progress lines (not on a terminal)",
                                                     "type": float})


class LogHandler(LogHandlerBase):
    """Feeds Snakemake's events to a Progress and prints its line; passes warnings, errors and summaries on."""

    def __post_init__(self) -> None:
        self.progress = Progress()
        self.interval = self.settings.interval if self.settings is not None else 10.0
        self.stream = sys.stdout if getattr(self.common_settings, "stdout", False) else sys.stderr  # as Snakemake's
        self.printed_at, self.printed_stage, self.inline = float("-inf"), None, self.stream.isatty()

    def emit(self, record: LogRecord) -> None:
        try:
            event = getattr(record, "event", None)
            if record.levelno > INFO or event in (LogEvent.ERROR, LogEvent.JOB_ERROR, LogEvent.GROUP_ERROR):
                self._print(self.format(record))
            elif event == LogEvent.RUN_INFO:
                self.progress.plan(getattr(record, "stats", {}) or {})
                if self.common_settings.dryrun:
                    self._print(self.format(record))
            elif event == LogEvent.JOB_INFO and not self.common_settings.dryrun:
                self.progress.started(record.jobid, record.rule_name)
                self._update()
            elif event == LogEvent.JOB_FINISHED:
                self.progress.finished(record.job_id)
                self._update()
            elif event is None and not str(record.msg).startswith(CHATTER) and str(record.msg).strip():
                self._print(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never stop the run
            self.handleError(record)

    def _update(self) -> None:
        """The progress line: in place on a terminal, else at most one each `interval` s or stage change."""
        stage, now = self.progress.current_stage(), time.monotonic()
        line = f"[{time.strftime('%H:%M:%S')}] {self.progress.line()}"
        if self.inline:
            self.stream.write("\r\033[K" + line + ("\n" if stage != self.printed_stage else ""))
            self.stream.flush()
        elif stage != self.printed_stage or now - self.printed_at >= self.interval or stage == "done":
            self._print(line)
        else:
            return
        self.printed_at, self.printed_stage = now, stage

    def _print(self, text: str) -> None:
        if self.inline:
            text = "\r\033[K" + text
        print(text, file=self.stream, flush=True)

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return False

    @property
    def has_formatter(self) -> bool:
        return False

    @property
    def needs_rulegraph(self) -> bool:
        return False
