"""Published numbers of the studies, and our results side by side with them.

The reference file (``references/published.yaml``) holds, per study, the tables that were typed from
the paper, each with its source (paper, version, table). Nothing in it is estimated: a study whose
tables could not be read has ``obtained: false``, a note saying what is missing, and no rows.

A reference row names its setting with this workflow's names, as in the study configs
(``configs/paper.yaml``, ``configs/spft.yaml``): ``dataset``, ``arch``, ``strategy``, ``metric``
(``auroc``, ``map``, ``accuracy``, ``macro_f1``, ``kappa``) and, for a per-class score, ``class``
(the class name of the prepared store). Values are stored as printed with the table's ``scale``
(100 for percentages) and compared as fractions.

:func:`side_by_side` joins our settings with the reference: one row per setting of ours, with the
published value and the difference where the reference has that setting, and the status
"no published counterpart" where it has not. Matching is exact on all five keys.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

KEYS = ("dataset", "arch", "strategy", "metric", "class")
ROW_FIELDS = {*KEYS, "value", "spread", "note"}
TABLE_FIELDS = {"source", "dataset", "arch", "strategy", "metric", "class", "split", "scale", "spread", "rows", "note"}
STUDY_FIELDS = {"citation", "source", "config", "obtained", "note", "tables"}
SPREADS = ("sd", "se", "none")
NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
MATCHED = "matched"
UNMATCHED = "no published counterpart"
COLUMNS = ["study", "source", *KEYS, "split", "value", "spread", "spread_kind"]


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message names the file and the entry."""


@dataclass
class Reference:
    rows: pd.DataFrame                              # one row per published number, columns COLUMNS
    studies: dict[str, dict] = field(default_factory=dict)   # study id -> citation, source, obtained, note

    def missing(self) -> list[str]:
        """One line per study whose numbers are not (all) in the file, with its note."""
        return [f"{sid}: {s.get('citation', '')} — {s.get('note', '').strip()}"
                for sid, s in self.studies.items() if not s.get("obtained")]


def empty_rows() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "spread") else "object") for c in COLUMNS})


def _number(value, where: str, allow_none: bool = False) -> float:
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReferenceError(f"{where}: expected a number, got {value!r}")
    return float(value)


def parse_reference(data, where: str = "reference") -> Reference:
    """Validate the reference file's contents (already parsed YAML) into a :class:`Reference`."""
    if not isinstance(data, dict) or not isinstance(data.get("studies"), dict):
        raise ReferenceError(f"{where}: expected a mapping with a 'studies' mapping")
    rows, studies, seen = [], {}, {}
    for sid, study in data["studies"].items():
        at = f"{where}: studies.{sid}"
        if not isinstance(study, dict):
            raise ReferenceError(f"{at}: expected a mapping")
        unknown = sorted(set(study) - STUDY_FIELDS)
        if unknown:
            raise ReferenceError(f"{at}: unknown keys {unknown} (known: {sorted(STUDY_FIELDS)})")
        for key in ("citation", "source"):
            if not isinstance(study.get(key), str) or not study[key].strip():
                raise ReferenceError(f"{at}: '{key}' is required (where the numbers come from)")
        tables = study.get("tables") or []
        if not isinstance(tables, list):
            raise ReferenceError(f"{at}.tables: expected a list")
        if not study.get("obtained") and not str(study.get("note", "")).strip():
            raise ReferenceError(f"{at}: a study not (fully) obtained needs a 'note' saying what is missing")
        studies[sid] = {k: v for k, v in study.items() if k != "tables"}
        for t, table in enumerate(tables):
            tat = f"{at}.tables[{t}]"
            if not isinstance(table, dict):
                raise ReferenceError(f"{tat}: expected a mapping")
            unknown = sorted(set(table) - TABLE_FIELDS)
            if unknown:
                raise ReferenceError(f"{tat}: unknown keys {unknown} (known: {sorted(TABLE_FIELDS)})")
            if not isinstance(table.get("source"), str) or not table["source"].strip():
                raise ReferenceError(f"{tat}: 'source' is required (table number, paper version)")
            scale = _number(table.get("scale", 1), f"{tat}.scale")
            if scale <= 0:
                raise ReferenceError(f"{tat}.scale: must be positive, got {scale}")
            kind = table.get("spread", "none")
            if kind not in SPREADS:
                raise ReferenceError(f"{tat}.spread: one of {SPREADS}, got {kind!r}")
            if not isinstance(table.get("rows"), list) or not table["rows"]:
                raise ReferenceError(f"{tat}.rows: expected a non-empty list")
            for r, row in enumerate(table["rows"]):
                rat = f"{tat}.rows[{r}]"
                if not isinstance(row, dict):
                    raise ReferenceError(f"{rat}: expected a mapping")
                unknown = sorted(set(row) - ROW_FIELDS)
                if unknown:
                    raise ReferenceError(f"{rat}: unknown keys {unknown} (known: {sorted(ROW_FIELDS)})")
                rec = {"study": sid, "source": f"{study['source']}, {table['source']}",
                       "split": table.get("split", "test")}
                for key in KEYS:
                    value = row.get(key, table.get(key, "" if key == "class" else None))
                    if key != "class" and value is None:
                        raise ReferenceError(f"{rat}: '{key}' is missing (in the row or its table)")
                    value = "" if value is None else str(value)
                    if value and not NAME.match(value):
                        raise ReferenceError(f"{rat}.{key}: {value!r} is not a workflow name")
                    rec[key] = value
                rec["value"] = _number(row.get("value"), f"{rat}.value") / scale
                spread = _number(row.get("spread"), f"{rat}.spread", allow_none=True) / scale
                if kind == "none" and math.isfinite(spread):
                    raise ReferenceError(f"{rat}.spread: the table says spread: none")
                rec["spread"], rec["spread_kind"] = spread, kind if math.isfinite(spread) else ""
                key = tuple(rec[k] for k in KEYS)
                if key in seen:
                    raise ReferenceError(f"{rat}: the setting {dict(zip(KEYS, key))} is already given at {seen[key]}")
                seen[key] = rat
                rows.append(rec)
    table = pd.DataFrame(rows, columns=COLUMNS) if rows else empty_rows()
    return Reference(rows=table, studies=studies)


def load_reference(path: str | Path) -> Reference:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ReferenceError(f"{path}: reference file is missing") from None
    except yaml.YAMLError as err:
        raise ReferenceError(f"{path}: not valid YAML ({err})") from None
    return parse_reference(data, str(path))


def side_by_side(ours: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Every row of ``ours`` (columns: the five KEYS, ``mean``, and any others, e.g. ``sd``, ``n_seeds``,
    ``lr``) with ``published``, ``published_spread``, ``spread_kind``, ``difference`` (ours − published),
    ``study``, ``source`` and ``status`` (``matched`` or ``no published counterpart``)."""
    ours = ours.copy()
    if "class" not in ours:
        ours["class"] = ""
    ours["class"] = ours["class"].fillna("").astype(str)
    lookup = {tuple(r[k] for k in KEYS): r for r in reference.rows.to_dict("records")}
    dup = ours.duplicated(list(KEYS))
    if dup.any():
        raise ValueError(f"our results list a setting twice: {ours.loc[dup, list(KEYS)].head(3).to_dict('records')}")
    extra = {"published": [], "published_spread": [], "spread_kind": [], "difference": [], "study": [],
             "source": [], "status": []}
    for rec in ours.to_dict("records"):
        ref = lookup.get(tuple(rec[k] for k in KEYS))
        extra["published"].append(ref["value"] if ref else math.nan)
        extra["published_spread"].append(ref["spread"] if ref else math.nan)
        extra["spread_kind"].append(ref["spread_kind"] if ref else "")
        extra["difference"].append(rec["mean"] - ref["value"] if ref else math.nan)
        extra["study"].append(ref["study"] if ref else "")
        extra["source"].append(ref["source"] if ref else "")
        extra["status"].append(MATCHED if ref else UNMATCHED)
    for k, v in extra.items():
        ours[k] = v
    return ours.reset_index(drop=True)


def published_only(ours: pd.DataFrame, reference: Reference, restrict: dict[str, list[str]] | None = None
                   ) -> pd.DataFrame:
    """Reference rows with no result of ours (optionally only those whose keys are in ``restrict``,
    e.g. the datasets and strategies this run has)."""
    have = {tuple(r.get(k, "") or "" for k in KEYS) for r in ours.to_dict("records")}
    rows = reference.rows
    for key, allowed in (restrict or {}).items():
        rows = rows[rows[key].isin(allowed)]
    keep = [tuple(r[k] for k in KEYS) not in have for r in rows.to_dict("records")]
    return rows[keep].reset_index(drop=True)


def fmt(value: float, decimals: int = 3, sign: bool = False) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


def matched_markdown(table: pd.DataFrame, spread_label: str = "sd") -> str:
    """One Markdown row per matched setting; a sentence when nothing matched."""
    m = table[table["status"] == MATCHED]
    if m.empty:
        return (f"None of the {len(table)} result(s) here has a published counterpart in the reference file "
                f"(matching is on dataset, architecture, strategy, metric and class).\n")
    md = pd.DataFrame({
        "Dataset": m["dataset"], "Arch": m["arch"], "Strategy": m["strategy"], "Metric": m["metric"],
        "Class": [c or "–" for c in m["class"]],
        f"Ours (mean ± {spread_label})": [f"{fmt(a)} ± {fmt(b)}" for a, b in zip(m["mean"], m.get("sd", m["mean"] * math.nan))],
        "Published": [fmt(v) + (f" ± {fmt(s)} ({k})" if k else "") for v, s, k in
                      zip(m["published"], m["published_spread"], m["spread_kind"])],
        "Δ (ours − published)": [fmt(d, sign=True) for d in m["difference"]],
        "Source": m["source"],
    })
    return md.to_markdown(index=False, disable_numparse=True) + "\n"


def status_markdown(reference: Reference) -> str:
    """What the reference file holds and what could not be obtained, for every report."""
    lines = [f"Reference file: {len(reference.rows)} published number(s) from "
             f"{sum(1 for s in reference.studies.values() if s.get('obtained'))} of {len(reference.studies)} "
             f"stud(ies) fully typed in."]
    for line in reference.missing():
        lines.append(f"- Not (fully) obtained — {line}")
    return "\n".join(lines) + "\n"


def classification_settings(metric_files: list[str]) -> pd.DataFrame:
    """Our overall test scores per (dataset, arch, strategy, metric), each strategy at the learning rate the
    classification report selects (best mean validation primary metric): mean, SD and SE over seeds."""
    from .collect import collect_runs
    from .select import aggregate, select_lr

    runs = collect_runs(metric_files)
    selected = select_lr(aggregate(runs))
    rows = []
    for r in selected.to_dict("records"):
        n = int(r["n_seeds"])
        for m in runs.dataset_metrics[r["dataset"]]:
            mean, se = r.get(f"test_{m}_mean", math.nan), r.get(f"test_{m}_se", math.nan)
            rows.append({"dataset": r["dataset"], "arch": r["arch"], "strategy": r["strategy"], "metric": m,
                         "class": "", "lr": r["lr"], "n_seeds": n, "mean": mean,
                         "sd": se * math.sqrt(n) if n > 1 else math.nan, "se": se})
    return pd.DataFrame(rows)


def build_published_report(metric_files: list[str], reference: Reference, out_dir: str | Path) -> dict[str, str]:
    """``side_by_side.csv`` (every setting of ours, matched or not), ``side_by_side.md`` (the matched ones,
    the reference rows this run has no result for, and what the reference file lacks)."""
    from medtl.io import atomic_path

    ours = classification_settings(metric_files)
    side = side_by_side(ours, reference)
    missing = published_only(ours, reference, {"dataset": sorted(set(ours["dataset"]))})
    n = int((side["status"] == MATCHED).sum())
    text = [
        "# Our results and the published ones\n",
        f"Test scores, mean ± SD over seeds at each strategy's selected learning rate, next to the published "
        f"number of the same dataset, architecture, strategy and metric: {n} of {len(side)} setting(s) have one "
        f"(the others have status \"{UNMATCHED}\" in [side_by_side.csv](side_by_side.csv)). "
        "Δ = ours − published.\n",
        matched_markdown(side),
    ]
    if len(missing):
        text.append(f"{len(missing)} published number(s) for these datasets have no result here (another "
                    "architecture, strategy or metric): "
                    + ", ".join(f"{r.dataset}/{r.arch}/{r.strategy}/{r.metric}" for r in missing.head(10).itertuples())
                    + (" ..." if len(missing) > 10 else "") + "\n")
    text.append(status_markdown(reference))
    out = Path(out_dir)
    written = {}
    for rel, obj in (("side_by_side.csv", side), ("side_by_side.md", "\n".join(text))):
        with atomic_path(out / rel) as tmp:
            if isinstance(obj, pd.DataFrame):
                obj.to_csv(tmp, index=False)
            else:
                tmp.write_text(obj)
        written[rel] = str(out / rel)
    return written
