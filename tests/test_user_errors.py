"""Bad input stops with one line that names it, where the user looks (issue 22).

- A config error names the key on its first line, without a dump of the schema; every list in the config
  declares its range (a negative seed stops the check instead of failing later as a missing input).
- A failed job's own message (its exception's first line) is what Snakemake's error block shows, with the
  log's path, instead of 'message: None'; the log ends with the same line; a data error is not retried.
- A full disk (errno ENOSPC, or torch's 'unexpected pos' from a short write) and a folder that refuses writes
  (EACCES, EROFS) end with one sentence naming the path and the reason.
- A checkpoint write cut off by a kill leaves no temporary file once the job has run again.
"""
from __future__ import annotations

import copy
import errno
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medtl.fit import Checkpointer
from medtl.io import WriteError, atomic_path, temporaries
from medtl.runtime import save_torch
from medtl.workflow.config import ConfigError, check_writable, validate_config
from medtl.workflow.script import FAILED, failure_message
from run_helpers import PROFILES
from workflow_helpers import REPO, snakemake, tiny_config, write_config

SCHEMA = REPO / "schemas" / "config.schema.yaml"
TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 470"


def config_error(change) -> str:
    config = tiny_config()
    change(config)
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    return str(info.value)


# -- the config check ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,first_line", [
    (lambda c: c.update(sedes=[1]),
     "invalid config: sedes: unknown top-level key (did you mean 'seeds'?)"),
    (lambda c: c.update(seeds=[-1]),
     "invalid config: seeds[0]: -1 is not allowed; expected an integer >= 0"),
], ids=["unknown-key", "negative-seed"])
def test_a_config_error_is_one_line_before_any_job(tmp_path, change, first_line):
    """Through Snakemake: the error's first line names the key; no schema follows, no job starts."""
    config = tiny_config()
    change(config)
    proc = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config), "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("ConfigError in file"))
    assert lines[at + 1].startswith(first_line), out[:2000]
    assert "Failed validating" not in out and "$schema" not in out and len(lines) < 10, out[:3000]
    assert "MissingInputException" not in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("change,fragment", [
    (lambda c: c.update(seeds=[0, -1]), "seeds[1]: -1 is not allowed; expected an integer >= 0"),
    (lambda c: c.update(seeds=[0, 0]), "seeds: [0, 0] is not allowed"),
    (lambda c: c.update(seeds=[2**32]), "seeds[0]: 4294967296 is not allowed"),
    (lambda c: c.update(learning_rates=[0.001, 0]), "learning_rates[1]: 0 is not allowed; expected a number > 0"),
    (lambda c: c["strategies"]["ft"].update(learning_rates=[-0.1]), "strategies.ft.learning_rates[0]: -0.1"),
    (lambda c: c["training"].update(epochs=0), "training.epochs: 0 is not allowed; expected an integer >= 1"),
    (lambda c: c["training"].update(normalize={"mean": [123.7, 116.3, 103.5], "std": [0.2, 0.2, 0.2]}),
     "training.normalize.mean[0]: 123.7 is not allowed; expected a number >= 0 and <= 1"),
    (lambda c: c["datasets"]["synth_derm"].update(split_seed=-3), "datasets.synth_derm.split_seed: -3"),
    (lambda c: c["architectures"]["vgg_tiny"].update(weights={"type": "pretrain", "dataset": "s", "seed": -1}),
     "architectures.vgg_tiny.weights.seed: -1"),
    (lambda c: c.update(detection={"datasets": {"d": {}}, "models": {"yolo": {}}, "strategies": {"ft": {}},
                                   "seeds": [-1]}), "detection.seeds[0]: -1"),
    (lambda c: c.update(segmentation={"datasets": {"d": {}}, "models": {"sam": {}}, "strategies": {"ft": {}},
                                      "seeds": [-1]}), "segmentation.seeds[0]: -1"),
    (lambda c: c["training"].update(epoch=3), "training.epoch: unknown key (did you mean 'epochs'?)"),
], ids=["seed", "repeated-seed", "seed-too-large", "lr", "strategy-lr", "epochs", "normalize-0-255", "split_seed",
        "weights-seed", "detection-seed", "segmentation-seed", "nested-unknown-key"])
def test_every_range_is_declared_and_named(change, fragment):
    message = config_error(change)
    assert fragment in message.splitlines()[0], message  # the first problem on the first line


def test_every_list_of_numbers_in_the_schema_declares_its_range():
    """Seeds, learning rates, normalisation: a list of numbers without a bound lets a bad value through."""
    schema = yaml.safe_load(SCHEMA.read_text())
    unbounded = []

    def walk(node, where):
        if isinstance(node, dict):
            items = node.get("items")
            if node.get("type") == "array" and isinstance(items, dict) and items.get("type") in ("integer", "number"):
                if not any(k in items for k in ("minimum", "exclusiveMinimum", "enum")):
                    unbounded.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(schema, "schema")
    assert not unbounded, unbounded


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml", "configs/spft.yaml"])
def test_the_check_fills_in_the_same_defaults_as_snakemake(name):
    """validate_config replaces snakemake.utils.validate(set_default=True): the jobs' params stay the same."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / name).read_text())
    theirs, ours = copy.deepcopy(config), copy.deepcopy(config)
    validate(theirs, str(SCHEMA), set_default=True)
    validate_config(ours, SCHEMA)
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


# -- a failed job's message -----------------------------------------------------------------------------------
def csv_dataset_with_a_missing_image(root: Path) -> dict:
    from PIL import Image

    (root / "img").mkdir(parents=True)
    rows = ["path,a,b,group"]
    for i in range(12):
        if i != 5:
            Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{i % 2},{(i + 1) % 2},p{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"mine": {"type": "csv_table", "options": {"root": str(root)}}}


@pytest.mark.slow
def test_a_failed_job_shows_its_own_message_and_is_not_retried(tmp_path):
    """A missing image, through Snakemake with the workstation profile: the error block's message is the
    job's exception (the last line of its log), the log's path is given, and the job runs once."""
    config = tiny_config({"ft": {}}, datasets=csv_dataset_with_a_missing_image(tmp_path / "data"))
    proc = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config),
                     "--profile", str(PROFILES / "workstation"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    log = "results/logs/prepare_dataset/mine_r36_c32.log"
    last = (tmp_path / log).read_text().strip().splitlines()[-1]
    assert last.startswith(FAILED) and "5.png" in last, last
    message = last[len(FAILED):]
    assert f"    message: {message}\n" in out, out[-4000:]
    assert "message: None" not in out
    assert f"    log: {log}" in out
    assert f"prepare_dataset (dataset=mine, prep=r36_c32) failed: {message} (traceback: {log})" in out
    assert "Trying to restart job" not in out  # a data error is not retried
    assert out.count("\nlocalrule prepare_dataset:") + out.count("\nrule prepare_dataset:") == 1


SCRIPT = """
import errno, sys
from types import SimpleNamespace
sys.path.insert(0, {scripts!r})
from medtl.io import atomic_path
from medtl.workflow.script import job_log

snakemake = SimpleNamespace(log=[{log!r}], rule="train", wildcards={{"seed": "0"}})
with job_log(snakemake):
    print("epoch 1 done")
    with atomic_path({target!r}) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device")
"""


def test_a_job_that_meets_a_full_disk_says_so_in_its_log_and_on_stderr(tmp_path):
    """The one line ends the log and is all the job prints on the terminal (no traceback there)."""
    log, target = tmp_path / "job.log", tmp_path / "runs" / "metrics.json"
    code = textwrap.dedent(SCRIPT.format(scripts=str(REPO / "workflow_scripts"), log=str(log), target=str(target)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    sentence = f"WriteError: cannot write {target}: no space left on device ("
    assert proc.stderr.startswith(f"train (seed=0) failed: {sentence}") and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"(traceback: {log})" in proc.stderr
    text = log.read_text()
    assert "epoch 1 done" in text and "Traceback" in text
    assert text.strip().splitlines()[-1].startswith(f"{FAILED}{sentence}")
    assert failure_message([str(log)]).startswith(sentence)
    assert not temporaries(target)


def test_a_log_without_an_error_line_is_named_as_such(tmp_path):
    """A killed job (out of memory, a signal) writes no error line: the message says so instead of 'None'."""
    log = tmp_path / "job.log"
    log.write_text(f"{FAILED}an earlier attempt's error\n[train] epoch 3/50 | loss 0.4\n" + "x\n" * 3)
    assert "ends without an error message" in failure_message([str(log)])
    assert failure_message([]) is None


# -- a full disk and a folder that refuses writes --------------------------------------------------------------
def test_enospc_names_the_file_and_the_space(tmp_path):
    target = tmp_path / "runs" / "metrics.json"
    with pytest.raises(WriteError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("{}")
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: no space left on device (") and "\n" not in message
    assert f"df -h {target.parent}" in message and info.value.errno == errno.ENOSPC
    assert not target.exists() and not temporaries(target)


def test_torch_short_write_is_named_as_a_full_disk(tmp_path, monkeypatch):
    """torch.save on a full disk raises RuntimeError('[enforce fail at inline_container.cc] unexpected pos')."""
    def full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError(TORCH_DISK_FULL)

    monkeypatch.setattr(torch, "save", full_disk)
    target = tmp_path / "weights" / "vgg" / "imagenet.pt"
    with pytest.raises(WriteError) as info:
        save_torch({"w": torch.zeros(3)}, target)
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: no space left on device or disk quota exceeded (")
    assert "unexpected pos 576 vs 470" in message and f"df -h {target.parent}" in message
    assert not target.exists() and not temporaries(target)


def test_a_checkpoint_that_cannot_be_written_is_named_in_one_sentence(tmp_path, monkeypatch):
    """The checkpoint is written in a thread; its error reaches the job as the same one sentence."""
    def full_disk(*args, **kwargs):
        raise RuntimeError(TORCH_DISK_FULL)

    monkeypatch.setattr(torch, "save", full_disk)
    path = tmp_path / "checkpoints" / "resume.ckpt"
    checkpointer = Checkpointer(path, "sig")
    checkpointer.save({"epoch": 0, "net": {"w": torch.zeros(2)}})
    with pytest.raises(WriteError, match=rf"^cannot write {path}: no space left on device"):
        checkpointer.wait()


@pytest.mark.parametrize("code,why", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")])
def test_a_folder_that_refuses_writes_is_named(tmp_path, monkeypatch, code, why):
    """Simulated (tests run as root, where chmod does not stop writes): mkstemp refused in the folder."""
    folder = tmp_path / "results" / "runs"
    folder.mkdir(parents=True)

    def refused(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(Path(dir) / ".metrics.json.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(WriteError) as info:
        with atomic_path(folder / "metrics.json") as tmp:
            tmp.write_text("{}")
    assert str(info.value).startswith(f"cannot write {folder / 'metrics.json'}: {why} (see ls -ld {folder};")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0o555")
def test_a_real_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match=rf"^cannot write {folder / 'metrics.json'}: permission denied"):
            with atomic_path(folder / "metrics.json") as tmp:
                tmp.write_text("{}")
    finally:
        folder.chmod(0o755)


def test_other_errors_pass_unchanged(tmp_path):
    """Reading an unreadable input inside the block, or any other error, is not called a write error."""
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "out.json"):
            raise PermissionError(errno.EACCES, "Permission denied", "/data/elsewhere/input.png")
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with atomic_path(tmp_path / "out.json"):
            raise RuntimeError("CUDA out of memory")
    assert not temporaries(tmp_path / "out.json")


def test_a_read_only_results_folder_stops_before_any_job(tmp_path, monkeypatch):
    """Snakemake clears a job's old outputs before it runs it and crashes on a read-only folder with a
    traceback of its own: the workflow's onstart check names the folder first."""
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "logs").mkdir()
    check_writable(results)  # writable: nothing to say, and nothing left behind
    assert sorted(p.name for p in results.iterdir()) == ["logs", "runs"]
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if Path(dir) == results / "runs":
            raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / ".write_check.x"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(ConfigError, match=rf"^results: cannot write in {results / 'runs'}: read-only file system"):
        check_writable(results)


# -- a checkpoint write cut off by a kill ----------------------------------------------------------------------
def test_a_killed_checkpoint_write_leaves_nothing_after_the_next_run(tmp_path, make_net, make_context,
                                                                     make_trainer, tiny_store, capfd):
    from medtl.strategies import STRATEGIES

    checkpoint = tmp_path / "checkpoints" / "resume.ckpt"
    checkpoint.parent.mkdir(parents=True)
    stale = checkpoint.parent / ".resume.ckpt.k1ll3d.tmp"  # atomic_path's name for it, as a kill leaves it
    stale.write_bytes(b"\0" * 300_000)
    other = checkpoint.parent / ".other.ckpt.k1ll3d.tmp"  # another file's temporary: not this checkpoint's
    other.write_bytes(b"\0")
    strategy = STRATEGIES.get("ft")(make_context(make_net("vgg_tiny"), tiny_store))
    outcome = make_trainer(strategy, tiny_store, epochs=1, checkpoint=checkpoint).fit()
    assert outcome.epochs_run == 1 and checkpoint.exists()
    assert not temporaries(checkpoint) and other.exists()
    assert f"removed {stale} (0.3 MB)" in capfd.readouterr().err
