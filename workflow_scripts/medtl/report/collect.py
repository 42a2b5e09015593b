"""Read every job's ``metrics.json`` into one table, refusing anything incomplete or ambiguous."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

import pandas as pd

from medtl.metrics import METRICS

KEY = ("dataset", "arch", "strategy", "lr", "seed")
REQUIRED = (*KEY, "primary_metric", "val", "test")
INFO_INT = ("best_epoch", "epochs_run")
#: what a job cost (medtl.training.job.cost): NaN in files written before jobs recorded it
COST = ("trainable_params", "total_params", "trainable_percent", "train_seconds", "peak_memory_mb")
SPLITS = ("val", "test")
# names end up in file names and table headers; the workflow's wildcards are stricter still
NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# results/runs/{dataset}/{arch}/{strategy}/lr{lr}/seed{seed}/metrics.json
RUN_PATH = re.compile(r"(?:^|/)(?P<dataset>[^/]+)/(?P<arch>[^/]+)/(?P<strategy>[^/]+)/"
                      r"lr(?P<lr>[^/]+)/seed(?P<seed>[^/]+)/metrics\.json$")


UNDEFINED_COLUMNS = [*KEY, "split", "kind", "name", "metrics", "reason"]


class MetricsFileError(ValueError):
    """A metrics file that cannot be used; the message starts with its path."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass
class Runs:
    """One row per job, plus which metrics each dataset reported."""

    table: pd.DataFrame
    metrics: list[str]                      # every metric seen, in canonical order
    dataset_metrics: dict[str, list[str]] = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)  # dataset -> primary metric
    #: what the jobs could not compute, one row per (job, split, class or metric): ``kind`` "class" (left out of
    #: the macro means in ``metrics``) or "metric" (undefined: null), with the job's ``reason``
    undefined: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=UNDEFINED_COLUMNS))


def metric_order(names) -> list[str]:
    """The package's metric order first, unknown names after it, sorted."""
    names = set(names)
    return [m for m in METRICS if m in names] + sorted(names - set(METRICS))


def check_complete(metric_files: list[str], expected: int) -> None:
    """Raise ValueError unless there are exactly ``expected`` distinct metrics files and all exist."""
    files = [str(f) for f in metric_files]
    problems = []
    if len(files) != expected:
        problems.append(f"expected {expected} metrics files, got {len(files)}")
    dup = sorted({f for f in files if files.count(f) > 1})
    if dup:
        problems.append(f"listed more than once: {', '.join(dup[:5])}" + (" ..." if len(dup) > 5 else ""))
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {', '.join(missing[:5])}")
    if problems:
        raise ValueError("incomplete set of training results: " + "; ".join(problems))


def _number(path: str, where: str, value, allow_null: bool = True) -> float:
    if value is None and allow_null:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, Real):
        raise MetricsFileError(path, f"'{where}' should be a number, got {value!r}")
    return float(value)


def load_run(path: str) -> tuple[dict, dict[str, set[str]]]:
    """One validated row of ``all_runs.csv`` and the metric names of each split."""
    p = Path(path)
    if not p.is_file():
        if (p.parent / "predictions.parquet").is_file():  # written just before metrics.json
            raise MetricsFileError(path, "metrics file is missing while the job's predictions.parquet is there: "
                                         "the job was interrupted or the file deleted; `snakemake` reruns the job "
                                         "(`snakemake -n` lists it) and then this report")
        raise MetricsFileError(path, "metrics file is missing (did its training job finish?)")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetricsFileError(path, f"not valid JSON ({err}); delete it and rerun its training job") from None
    if not isinstance(data, dict):
        raise MetricsFileError(path, f"expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise MetricsFileError(path, f"lacks required key(s) {missing}")

    row: dict = {}
    for k in ("dataset", "arch", "strategy", "primary_metric"):
        v = data[k]
        if not isinstance(v, str) or not NAME.match(v):
            raise MetricsFileError(path, f"'{k}' should be a name of letters, digits, '_', '-' or '.', got {v!r}")
        row[k] = v
    lr = _number(path, "lr", data["lr"], allow_null=False)
    if not (math.isfinite(lr) and lr > 0):
        raise MetricsFileError(path, f"'lr' should be a positive number, got {data['lr']!r}")
    row["lr"] = lr
    seed = _number(path, "seed", data["seed"], allow_null=False)
    if not seed.is_integer():
        raise MetricsFileError(path, f"'seed' should be an integer, got {data['seed']!r}")
    row["seed"] = int(seed)

    # the path says which job this is meant to be; a file copied into the wrong folder is refused
    m = RUN_PATH.search(p.as_posix())
    if m:
        try:
            path_lr, path_seed = float(m["lr"]), int(m["seed"])
        except ValueError:
            path_lr, path_seed = None, None
        if path_seed is not None:
            said = {"dataset": m["dataset"], "arch": m["arch"], "strategy": m["strategy"]}
            wrong = [f"{k}={row[k]!r} (path: {v!r})" for k, v in said.items() if row[k] != v]
            if not math.isclose(path_lr, lr, rel_tol=1e-9):
                wrong.append(f"lr={lr!r} (path: {m['lr']!r})")
            if path_seed != row["seed"]:
                wrong.append(f"seed={row['seed']!r} (path: {m['seed']!r})")
            if wrong:
                raise MetricsFileError(path, "contents do not match its path: " + ", ".join(wrong))

    for k in INFO_INT:
        v = _number(path, k, data.get(k))
        row[k] = v if math.isnan(v) else int(v)
    row["seconds"] = _number(path, "seconds", data.get("seconds"))
    for k in COST:
        row[k] = _number(path, k, data.get(k))
    row["peak_memory_of"] = data.get("peak_memory_of")

    names: dict[str, set[str]] = {}
    for split in SPLITS:
        scores = data[split]
        if not isinstance(scores, dict):
            raise MetricsFileError(path, f"'{split}' should be an object of metric: value")
        if row["primary_metric"] not in scores:
            raise MetricsFileError(path, f"'{split}' lacks the primary metric '{row['primary_metric']}'")
        for name, value in scores.items():
            if not NAME.match(name):
                raise MetricsFileError(path, f"'{split}' has an odd metric name {name!r}")
            row[f"{split}_{name}"] = _number(path, f"{split}.{name}", value)
        names[split] = set(scores)
    row["monitor"] = data.get("monitor")
    row["device"] = data.get("device")
    row["file"] = str(path)
    row["undefined"] = _undefined(path, data, row)
    return row, names


def _undefined(path: str, data: dict, row: dict) -> list[dict]:
    """The job's classes left out of macro means and its undefined metrics, with their reasons (files written
    before jobs recorded them have none)."""
    out = []
    key = {k: row[k] for k in KEY}
    excluded, undefined = data.get("excluded_classes") or {}, data.get("undefined_metrics") or {}
    if not isinstance(excluded, dict) or not isinstance(undefined, dict):
        raise MetricsFileError(path, "'excluded_classes' and 'undefined_metrics' should be objects by split")
    for split, entries in excluded.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "class" in e for e in entries):
            raise MetricsFileError(path, f"'excluded_classes.{split}' should be a list of {{class, metrics, reason}}")
        out += [{**key, "split": split, "kind": "class", "name": str(e["class"]),
                 "metrics": " ".join(map(str, e.get("metrics") or [])), "reason": str(e.get("reason", ""))}
                for e in entries]
    for split, reasons in undefined.items():
        if not isinstance(reasons, dict):
            raise MetricsFileError(path, f"'undefined_metrics.{split}' should be an object of metric: reason")
        out += [{**key, "split": split, "kind": "metric", "name": str(m), "metrics": str(m), "reason": str(why)}
                for m, why in reasons.items()]
    return out


def collect_runs(metric_files: list[str]) -> Runs:
    """Validate and merge the metrics files; every file gives exactly one row."""
    files = [str(f) for f in metric_files]
    if not files:
        raise ValueError("no metrics files given")
    rows, seen, all_names = [], {}, set()
    dataset_names: dict[str, set[str]] = {}
    primary: dict[str, tuple[str, str]] = {}
    for path in files:
        row, names = load_run(path)
        key = tuple(row[k] for k in KEY)
        if key in seen:
            raise MetricsFileError(path, f"duplicate job {dict(zip(KEY, key))}, already read from {seen[key]}")
        seen[key] = path
        ds = row["dataset"]
        if ds in primary and primary[ds][0] != row["primary_metric"]:
            raise MetricsFileError(path, f"primary metric '{row['primary_metric']}' of dataset '{ds}' differs "
                                         f"from '{primary[ds][0]}' in {primary[ds][1]}")
        primary.setdefault(ds, (row["primary_metric"], path))
        split_names = names["val"] | names["test"]
        all_names |= split_names
        dataset_names.setdefault(ds, set()).update(split_names)
        rows.append(row)

    undefined = pd.DataFrame([u for row in rows for u in row.pop("undefined")], columns=UNDEFINED_COLUMNS)
    metrics = metric_order(all_names)
    columns = [*KEY, "primary_metric", "best_epoch", "epochs_run", "seconds", *COST, "peak_memory_of",
               *(f"{s}_{m}" for s in SPLITS for m in metrics), "monitor", "device", "file"]
    table = pd.DataFrame(rows)
    for col in columns:  # metrics a file did not report are NaN
        if col not in table:
            table[col] = math.nan
    table = table[columns]
    for col in (f"{s}_{m}" for s in SPLITS for m in metrics):
        table[col] = table[col].astype("float64")
    if len(table) != len(files):  # nothing may be lost on the way
        raise RuntimeError(f"read {len(files)} metrics files but built {len(table)} rows")
    return Runs(table=table, metrics=metrics,
                dataset_metrics={d: metric_order(n) for d, n in dataset_names.items()},
                primary={d: p for d, (p, _) in primary.items()}, undefined=undefined)
