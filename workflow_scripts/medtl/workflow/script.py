"""What every thin rule script needs: its log, its params, its thread count."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def job_log(snakemake):
    """Send this job's stdout and stderr (Python and C level alike) to its ``log:`` file."""
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
