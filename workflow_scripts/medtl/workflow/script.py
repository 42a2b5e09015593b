"""What every thin rule script needs: its log, its params, its thread count."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def job_log(snakemake, fast_exit: bool = True):
    """Send this job's stdout and stderr (Python and C level alike) to its ``log:`` file; when the job
    succeeds, end the process at once (``fast_exit``).

    Python's teardown after torch, torchvision and scikit-learn are imported takes 1-1.5 s of CPU (it
    frees every module's objects one by one), a fifth of a small training job; ``os._exit`` skips it.
    Every output has been written and closed by then (atomic writes in ``with`` blocks), the log is
    flushed and closed here, and a failing job still raises and exits the normal way."""
    with _to_log(snakemake):
        yield
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
        except BaseException:
            import traceback

            traceback.print_exc()
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
