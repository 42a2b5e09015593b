"""What every thin rule script needs: its log, its params, its thread count; and what a failed job tells
the user: one line naming the error, as the last line of its log and in Snakemake's error block."""
from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

#: starts the last line of a failed job's log; what follows it is the job's message in Snakemake's error block
FAILED = "job failed: "
#: the error block's message when a job's log has no such line: its process ended without a Python error
NO_SUMMARY = ("{log} ends without an error message: the job failed before its log began (see the output above "
              "or the cluster's log) or was killed (out of memory, a signal, a time limit)")


def summary(err: BaseException) -> str:
    """An exception in one line: its type and the first line of its message (with the next one when the
    first only introduces it, as in 'invalid config:')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def job_name(snakemake) -> str:
    """'train (dataset=..., seed=0)': the rule and the wildcards of a job."""
    rule = getattr(snakemake, "rule", None) or "job"
    wildcards = getattr(snakemake, "wildcards", None)
    items = dict(wildcards.items()) if wildcards is not None and hasattr(wildcards, "items") else {}
    return f"{rule} ({', '.join(f'{k}={v}' for k, v in items.items())})" if items else str(rule)


@contextmanager
def job_log(snakemake, fast_exit: bool = True):
    """Send this job's stdout and stderr (Python and C level alike) to its ``log:`` file; when the job
    succeeds, end the process at once (``fast_exit``).

    Python's teardown after torch, torchvision and scikit-learn are imported takes 1-1.5 s of CPU (it
    frees every module's objects one by one), a fifth of a small training job; ``os._exit`` skips it.
    Every output has been written and closed by then (atomic writes in ``with`` blocks), the log is
    flushed and closed here, and a failing job exits with status 1 the normal way.

    A failing job's log ends with its traceback and one line ``job failed: <error>`` (what
    :func:`show_job_errors` puts in Snakemake's error block); the job's own stderr, which Snakemake prints
    when it runs jobs itself, gets the same line with the log's path instead of the whole traceback."""
    try:
        with _to_log(snakemake):
            yield
    except Exception as err:
        if not snakemake.log:
            raise
        print(f"{job_name(snakemake)} failed: {summary(err)} (traceback: {snakemake.log[0]})", file=sys.stderr,
              flush=True)
        raise SystemExit(1) from None
    if fast_exit:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@contextmanager
def _to_log(snakemake):
    if not snakemake.log:
        yield
        return
    path = Path(str(snakemake.log[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException as err:
            import traceback

            traceback.print_exc()
            if isinstance(err, Exception):
                print(f"\n{FAILED}{summary(err)}", file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def param(snakemake, name: str):
    """Params are passed as canonical JSON text (stable for Snakemake's change detection)."""
    return json.loads(getattr(snakemake.params, name))


def failure_message(logs: list[str]) -> str | None:
    """What a failed job's logs say went wrong: the ``job failed:`` line near the end of the first log that
    has one, else that there is none (a killed or crashed job); None without a log."""
    for log in logs:
        try:
            with open(log, errors="replace") as f:
                tail = [line.strip() for line in f.read()[-20000:].splitlines() if line.strip()][-3:]
        except OSError:
            continue
        for line in reversed(tail):
            if line.startswith(FAILED):
                return line[len(FAILED):]
    return NO_SUMMARY.format(log=logs[0]) if logs else None


class _JobMessage(logging.Filter):
    """Puts a failed job's own message in Snakemake's 'Error in rule' block, which otherwise reads
    'message: None' (Snakemake 9 fills it from the executor: nothing when it runs jobs itself, the SLURM
    state on a cluster, which is then kept after the job's message)."""

    def __init__(self, event):
        super().__init__()
        self.event = event

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event", None) == self.event:
            try:
                message = failure_message([str(f) for f in getattr(record, "log", None) or []])
            except Exception:  # never let the message break Snakemake's own reporting
                message = None
            if message:
                given = getattr(record, "rule_msg", None)
                record.rule_msg = f"{message} [{given}]" if given else message
        return True


def show_job_errors() -> None:
    """Install :class:`_JobMessage` on Snakemake's logger (once; the Snakefile calls this when it is read)."""
    from snakemake.logging import LogEvent, logger

    if not any(isinstance(f, _JobMessage) for f in logger.filters):
        logger.addFilter(_JobMessage(LogEvent.JOB_ERROR))
