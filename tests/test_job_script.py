"""What every rule script's ``job_log`` promises: output and traceback in the job's log, and a successful job
that ends without Python's slow teardown (os._exit) yet loses nothing it wrote; a failing one exits non-zero."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import atexit, sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, {scripts!r})
from medtl.workflow.script import job_log

out = Path({out!r})
atexit.register(lambda: (out / "teardown_ran").write_text("yes"))
snakemake = SimpleNamespace(log=[str(out / "job.log")])
with job_log(snakemake):
    print("to the log")
    with open(out / "result.txt", "w") as f:
        f.write("x" * 100000)
    if {fail!r}:
        raise ValueError("bad input in row 3")
print("after the block: never reached on success")
"""


def run_script(tmp_path: Path, fail: bool) -> subprocess.CompletedProcess:
    code = textwrap.dedent(SCRIPT.format(scripts=str(REPO / "workflow_scripts"), out=str(tmp_path), fail=fail))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_successful_job_exits_at_once_with_its_outputs_and_log_complete(tmp_path):
    proc = run_script(tmp_path, fail=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "result.txt").read_text() == "x" * 100000
    assert "to the log" in (tmp_path / "job.log").read_text()
    assert "never reached" not in proc.stdout
    assert not (tmp_path / "teardown_ran").exists(), "the interpreter's teardown ran (no fast exit)"


def test_a_failing_job_exits_non_zero_with_its_traceback_in_the_log(tmp_path):
    proc = run_script(tmp_path, fail=True)
    assert proc.returncode != 0
    log = (tmp_path / "job.log").read_text()
    assert "ValueError: bad input in row 3" in log and "to the log" in log
    assert (tmp_path / "teardown_ran").exists()  # the normal exit path
