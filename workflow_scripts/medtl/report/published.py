"""Published numbers of the studies, and our results side by side with them.

The reference file (``references/published.yaml``) holds, per study, the tables that were typed from
the paper, each with its source (paper, version, table). Nothing in it is estimated: a study whose
tables could not be read has ``obtained: false``, a note saying what is missing, and no rows. The file's shape
(known keys, types, names, ranges) is checked against ``schemas/published.schema.yaml`` (:func:`schema_problems`:
every problem at once, one line each naming the file, the entry and the key); :func:`parse_reference` then makes
the checks a schema cannot (keys a row takes from its table, a setting given twice, runs, spreads, the summary
tables against the study's main metrics).

A reference row names its setting with this workflow's names, as in the study configs
(``configs/paper.yaml``, ``configs/spft.yaml``): ``dataset``, ``arch``, ``strategy``, ``metric``
(``auroc``, ``map``, ``accuracy``, ``macro_f1``, ``kappa``) and, for a per-class score, ``class``
(the class name of the prepared store). Values are stored as printed with the table's ``scale``
(100 for percentages) and compared as fractions.

:func:`side_by_side` joins our settings with the reference: one row per setting of ours, with the
published value and the difference where the reference has that setting, and the status
"no published counterpart" where it has not. Matching is exact on all five keys.

What a published number is (``statistic``, per table or row): ``mean`` over the paper's runs (the default; its
``spread`` is their SD (ddof = 1), population SD ``sd_pop`` (ddof = 0) or SE, over ``n_runs`` runs),
``single`` (one number per setting whose aggregation the paper does not state), ``run`` (the score of one
run, numbered by ``run``) or ``best_run`` (the best of the runs). Our means over seeds are compared with the
``mean`` of a setting, or its ``single`` number where the paper gives no mean; runs and best runs are kept for
the record and for checks of the paper's own arithmetic. The same setting and statistic may come from two
tables only with the same number (then both tables are its source).

A study may also carry the paper's summary tables over its per-setting tables: ``main_metrics`` (the metric
per dataset those summaries use), ``best_per_dataset`` (the best architecture and strategy per dataset with
its printed gain, the first paper's Table 11) and ``effectiveness`` (per strategy and architecture, the
printed count of datasets where the strategy beats the reference, with total and effectiveness, Table 12).
:func:`recount_table11` and :func:`recount_table12` rebuild them from the study's own published means with
the functions the classification report uses on our results (:func:`medtl.report.tables.best_per_dataset`,
:func:`medtl.report.tables.effectiveness_counts`) and set them beside the printed ones.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

KEYS = ("dataset", "arch", "strategy", "metric", "class")
SUMMARY_FIELDS = ("main_metrics", "best_per_dataset", "effectiveness")
#: the shape of the reference file (known keys, types, names, ranges), checked before anything else is:
#: schemas/published.schema.yaml; the names below are read from it
SCHEMA_FILE = Path(__file__).resolve().parents[3] / "schemas" / "published.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_FILE.read_text())
SPREADS = tuple(SCHEMA["$defs"]["table"]["properties"]["spread"]["enum"])
#: what one published number is: a mean over runs, one number of unstated aggregation, one run, the best run
STATISTICS = tuple(SCHEMA["$defs"]["statistic"]["enum"])
#: what our mean over seeds is compared with, in order of preference
COUNTERPART = ("mean", "single")
#: classification (medtl.metrics), detection (mAP@50, mAP@50-95, precision, recall) and segmentation (Dice)
METRIC_NAMES = tuple(SCHEMA["$defs"]["metric"]["enum"])
NAME = re.compile(SCHEMA["$defs"]["name"]["pattern"])
MATCHED = "matched"
UNMATCHED = "no published counterpart"
COLUMNS = ["study", "source", *KEYS, "split", "value", "spread", "spread_kind", "statistic", "run", "n_runs", "se"]
BEST_COLUMNS = ["study", "source", "dataset", "arch", "strategy", "gain_pct", "reference"]


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message names the file and the entry."""


@dataclass
class Reference:
    rows: pd.DataFrame                              # one row per published number, columns COLUMNS
    studies: dict[str, dict] = field(default_factory=dict)   # study id -> citation, source, obtained, note
    main_metrics: dict[str, dict[str, str]] = field(default_factory=dict)   # study id -> dataset -> metric
    best: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BEST_COLUMNS))  # printed Table 11 rows
    #: study id -> {source, reference, threshold (fraction), archs, rows (DataFrame: strategy, one column per
    #: arch, total, effectiveness_pct), totals ({arch: printed column total})}
    effectiveness: dict[str, dict] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """One line per study whose numbers are not (all) in the file, with its note."""
        return [f"{sid}: {s.get('citation', '')} — {s.get('note', '').strip()}"
                for sid, s in self.studies.items() if not s.get("obtained")]


def empty_rows() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("value", "spread", "run", "n_runs", "se") else "object")
                         for c in COLUMNS})


def _se(spread: float, kind: str, n_runs: int | None) -> float:
    """The published spread as a standard error: SE as printed, SD / sqrt(n), population SD / sqrt(n - 1)."""
    if not math.isfinite(spread):
        return math.nan
    if kind == "se":
        return spread
    if not n_runs:
        return math.nan
    if kind == "sd":
        return spread / math.sqrt(n_runs)
    if kind == "sd_pop":
        return spread / math.sqrt(n_runs - 1) if n_runs > 1 else math.nan
    return math.nan


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_problem(error) -> list[str]:
    """One schema error in the words of the reference file: the entry's key path, then what is wrong."""
    schema, instance, kind = error.schema, error.instance, error.validator
    path = _key_path(error.absolute_path)
    at = f"{path}: " if path else ""
    if kind == "required":
        props = schema.get("properties", {})
        return [f"{at}'{k}' is required" + (f" {props[k]['x-required']}" if "x-required" in props.get(k, {}) else "")
                for k in error.validator_value if k not in instance]
    if kind == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        return [f"{at}unknown keys {sorted(set(instance) - set(known))} (known: {known})"]
    if kind in ("minimum", "exclusiveMinimum") and schema.get("type") == "number":
        return [f"{at}must be {'>=' if kind == 'minimum' else '>'} {error.validator_value:g}, got {instance!r}"]
    if "x-message" in schema:
        known = f" (known: {', '.join(map(str, error.validator_value))})" if kind == "enum" else ""
        return [f"{at}{instance!r} {schema['x-message']}{known}"]
    if "x-expected" in schema:
        return [f"{at}expected {schema['x-expected']}, got {instance!r}"]
    if kind == "enum":
        return [f"{at}one of {tuple(error.validator_value)}, got {instance!r}"]
    return [f"{at}{error.message}"]


def schema_problems(data, where: str = "reference") -> list[str]:
    """Every problem of the reference file's shape (:data:`SCHEMA`), one line each: the file, the entry
    (``studies.<id>.tables[0].rows[2]``), the key and what is wrong."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    return list(dict.fromkeys(f"{where}: {line}" for error in errors for line in _schema_problem(error)))


def _parse_best(block: dict, at: str, sid: str, study_source: str, main: dict[str, str]) -> list[dict]:
    out, seen = [], {}
    for r, row in enumerate(block["rows"]):
        rat = f"{at}.rows[{r}]"
        rec = {k: row[k] for k in ("dataset", "arch", "strategy")}
        if rec["dataset"] in seen:
            raise ReferenceError(f"{rat}: dataset {rec['dataset']!r} is already given at {seen[rec['dataset']]}")
        if rec["dataset"] not in main:
            raise ReferenceError(f"{rat}: dataset {rec['dataset']!r} has no main metric in the study's main_metrics")
        seen[rec["dataset"]] = rat
        rec["gain_pct"] = _number(row["gain_pct"], f"{rat}.gain_pct")
        out.append({"study": sid, "source": f"{study_source}, {block['source']}", **rec,
                    "reference": block["reference"]})
    return out


def _parse_effectiveness(block: dict, at: str, study_source: str) -> dict:
    reference = block["reference"]
    threshold = _number(block["threshold_pct"], f"{at}.threshold_pct")
    archs: list[str] | None = None
    rows, seen = [], {}
    for r, row in enumerate(block["rows"]):
        rat = f"{at}.rows[{r}]"
        strategy = row["strategy"]
        if strategy in seen:
            raise ReferenceError(f"{rat}: strategy {strategy!r} is already given at {seen[strategy]}")
        if strategy == reference:
            raise ReferenceError(f"{rat}: the reference {reference!r} is not counted against itself")
        seen[strategy] = rat
        names = list(row["counts"])
        if archs is None:
            archs = names
        elif names != archs:
            raise ReferenceError(f"{rat}.counts: architectures {names} differ from the first row's {archs}")
        rows.append({"strategy": strategy, **{a: int(row["counts"][a]) for a in archs}, "total": int(row["total"]),
                     "effectiveness_pct": _number(row["effectiveness_pct"], f"{rat}.effectiveness_pct")})
    totals = block.get("totals")
    if totals is not None:
        if list(totals) != archs:
            raise ReferenceError(f"{at}.totals: expected a mapping of the rows' architectures {archs} to counts")
        totals = {a: int(totals[a]) for a in archs}
    return {"source": f"{study_source}, {block['source']}", "reference": reference, "threshold": threshold / 100.0,
            "threshold_pct": threshold, "archs": archs,
            "rows": pd.DataFrame(rows, columns=["strategy", *archs, "total", "effectiveness_pct"]),
            "totals": totals or {}}


def _number(value, where: str, allow_none: bool = False) -> float:
    """A number the schema has let through, as a float; NaN and infinity are refused (YAML's .nan, .inf)."""
    if value is None and allow_none:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReferenceError(f"{where}: expected a number, got {value!r}")
    return float(value)


def parse_reference(data, where: str = "reference") -> Reference:
    """Validate the reference file's contents (already parsed YAML) into a :class:`Reference`: its shape against
    the schema (:func:`schema_problems`, every problem at once), then what a schema cannot check."""
    if not isinstance(data, dict) or not isinstance(data.get("studies"), dict):
        raise ReferenceError(f"{where}: expected a mapping with a 'studies' mapping")
    problems = schema_problems(data, where)
    if problems:
        raise ReferenceError("\n".join(problems))
    rows, studies, seen = [], {}, {}
    main_metrics: dict[str, dict[str, str]] = {}
    best: list[dict] = []
    effectiveness: dict[str, dict] = {}
    for sid, study in data["studies"].items():
        at = f"{where}: studies.{sid}"
        tables = study.get("tables") or []
        if not study.get("obtained") and not str(study.get("note", "")).strip():
            raise ReferenceError(f"{at}: a study not (fully) obtained needs a 'note' saying what is missing")
        studies[sid] = {k: v for k, v in study.items() if k != "tables" and k not in SUMMARY_FIELDS}
        for t, table in enumerate(tables):
            tat = f"{at}.tables[{t}]"
            scale = _number(table.get("scale", 1), f"{tat}.scale")
            kind = table.get("spread", "none")
            n_runs = table.get("n_runs")
            for r, row in enumerate(table["rows"]):
                rat = f"{tat}.rows[{r}]"
                rec = {"study": sid, "source": f"{study['source']}, {table['source']}",
                       "split": table.get("split", "test")}
                for key in KEYS:  # the schema has checked the names where they are given, the row or its table
                    value = row.get(key, table.get(key, "" if key == "class" else None))
                    if key != "class" and value is None:
                        raise ReferenceError(f"{rat}: '{key}' is missing (in the row or its table)")
                    rec[key] = "" if value is None else str(value)
                statistic = row.get("statistic", table.get("statistic", "mean"))
                run = row.get("run", table.get("run"))
                if statistic == "run" and run is None:
                    raise ReferenceError(f"{rat}.run: statistic 'run' needs the run's number as printed "
                                         f"(an integer >= 1), got {run!r}")
                if statistic != "run" and run is not None:
                    raise ReferenceError(f"{rat}.run: only a row with statistic 'run' names a run (it is {statistic!r})")
                rec["value"] = _number(row["value"], f"{rat}.value") / scale
                spread = _number(row.get("spread"), f"{rat}.spread", allow_none=True) / scale
                if kind == "none" and math.isfinite(spread):
                    raise ReferenceError(f"{rat}.spread: the table says spread: none")
                if statistic != "mean" and math.isfinite(spread):
                    raise ReferenceError(f"{rat}.spread: only a mean over runs has a spread (statistic is {statistic!r})")
                rec["spread"], rec["spread_kind"] = spread, kind if math.isfinite(spread) else ""
                rec["statistic"], rec["run"] = statistic, float(run) if statistic == "run" else math.nan
                rec["n_runs"] = float(n_runs) if n_runs is not None else math.nan
                rec["se"] = _se(spread, kind, n_runs)
                key = (*(rec[k] for k in KEYS), statistic, run if statistic == "run" else 0)
                if key in seen:
                    first, first_at = seen[key]
                    same = (first["value"] == rec["value"] and first["spread_kind"] == rec["spread_kind"]
                            and (first["spread"] == rec["spread"] or not (math.isfinite(first["spread"])
                                                                         or math.isfinite(rec["spread"]))))
                    if same:  # the same number printed in two tables: kept once, both are its source
                        first["source"] += f"; {table['source']}"
                        continue
                    raise ReferenceError(f"{rat}: the setting {dict(zip(KEYS, key))} ({statistic}) is already given "
                                         f"at {first_at} with another number")
                seen[key] = (rec, rat)
                rows.append(rec)
        main = {}
        if study.get("main_metrics") is not None:
            main = main_metrics[sid] = dict(study["main_metrics"]["datasets"])
        for key in ("best_per_dataset", "effectiveness"):
            if study.get(key) is not None and not main:
                raise ReferenceError(f"{at}.{key}: needs the study's main_metrics (the metric it counts on, per dataset)")
        if study.get("best_per_dataset") is not None:
            best.extend(_parse_best(study["best_per_dataset"], f"{at}.best_per_dataset", sid, study["source"], main))
        if study.get("effectiveness") is not None:
            effectiveness[sid] = _parse_effectiveness(study["effectiveness"], f"{at}.effectiveness", study["source"])
    table = pd.DataFrame(rows, columns=COLUMNS) if rows else empty_rows()
    return Reference(rows=table, studies=studies, main_metrics=main_metrics,
                     best=pd.DataFrame(best, columns=BEST_COLUMNS), effectiveness=effectiveness)


def load_reference(path: str | Path) -> Reference:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ReferenceError(f"{path}: reference file is missing") from None
    except yaml.YAMLError as err:
        raise ReferenceError(f"{path}: not valid YAML ({err})") from None
    return parse_reference(data, str(path))


def counterparts(reference: Reference) -> dict[tuple, dict]:
    """Setting (the five KEYS) -> the published row our mean is compared with: its ``mean``, else its
    ``single`` number (runs and best runs are never a counterpart)."""
    lookup: dict[tuple, dict] = {}
    for statistic in reversed(COUNTERPART):  # the preferred statistic is written last and wins
        for r in reference.rows.to_dict("records"):
            if r["statistic"] == statistic:
                lookup[tuple(r[k] for k in KEYS)] = r
    return lookup


def side_by_side(ours: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Every row of ``ours`` (columns: the five KEYS, ``mean``, and any others, e.g. ``sd``, ``n_seeds``,
    ``lr``) with ``published``, ``published_spread``, ``spread_kind``, ``difference`` (ours − published),
    ``study``, ``source`` and ``status`` (``matched`` or ``no published counterpart``), then
    ``published_statistic`` (``mean`` or ``single``), ``published_se`` (the published spread as a standard
    error; NaN without a spread, or an SD without ``n_runs``) and ``difference_se`` (the difference in published
    standard errors, (ours − published) / published_se; NaN where that SE is missing or printed as 0)."""
    ours = ours.copy()
    if "class" not in ours:
        ours["class"] = ""
    ours["class"] = ours["class"].fillna("").astype(str)
    lookup = counterparts(reference)
    dup = ours.duplicated(list(KEYS))
    if dup.any():
        raise ValueError(f"our results list a setting twice: {ours.loc[dup, list(KEYS)].head(3).to_dict('records')}")
    extra = {"published": [], "published_spread": [], "spread_kind": [], "difference": [], "study": [],
             "source": [], "status": [], "published_statistic": [], "published_se": [], "difference_se": []}
    for rec in ours.to_dict("records"):
        ref = lookup.get(tuple(rec[k] for k in KEYS))
        extra["published"].append(ref["value"] if ref else math.nan)
        extra["published_spread"].append(ref["spread"] if ref else math.nan)
        extra["spread_kind"].append(ref["spread_kind"] if ref else "")
        extra["difference"].append(rec["mean"] - ref["value"] if ref else math.nan)
        extra["study"].append(ref["study"] if ref else "")
        extra["source"].append(ref["source"] if ref else "")
        extra["status"].append(MATCHED if ref else UNMATCHED)
        extra["published_statistic"].append(ref["statistic"] if ref else "")
        se = ref["se"] if ref else math.nan
        extra["published_se"].append(se)
        diff = rec["mean"] - ref["value"] if ref else math.nan
        extra["difference_se"].append(diff / se if math.isfinite(se) and se > 0 else math.nan)
    for k, v in extra.items():
        ours[k] = v
    if "ci_low" in ours:  # our interval (medtl.report.significance): does the published number lie inside it?
        ours["published_in_ci"] = pd.array(
            [bool(lo <= v <= hi) if all(math.isfinite(x) for x in (lo, hi, v)) else pd.NA
             for lo, hi, v in zip(ours["ci_low"], ours["ci_high"], ours["published"])], dtype="boolean")
    return ours.reset_index(drop=True)


def published_only(ours: pd.DataFrame, reference: Reference, restrict: dict[str, list[str]] | None = None
                   ) -> pd.DataFrame:
    """Reference rows with no result of ours (optionally only those whose keys are in ``restrict``,
    e.g. the datasets and strategies this run has)."""
    have = {tuple(r.get(k, "") or "" for k in KEYS) for r in ours.to_dict("records")}
    rows = reference.rows  # one row per setting, as in counterparts(): runs and best runs are left out
    rank = rows["statistic"].map({stat: i for i, stat in enumerate(COUNTERPART)})
    rows = (rows[rank.notna()].assign(_rank=rank[rank.notna()]).sort_values("_rank", kind="stable")
            .drop_duplicates(list(KEYS)).sort_index().drop(columns="_rank"))
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
        "Δ / published SE": [fmt(d, 1, sign=True) for d in m.get("difference_se", m["mean"] * math.nan)],
        "Source": m["source"],
    })
    if "published_in_ci" in m:  # medtl.report.significance
        md.insert(md.columns.get_loc("Published") + 1, "In our interval",
                  ["n/a" if pd.isna(v) else "yes" if v else "no" for v in m["published_in_ci"]])
        md.insert(md.columns.get_loc("Published"), "Our interval",
                  [f"[{fmt(a)}, {fmt(b)}]" for a, b in zip(m["ci_low"], m["ci_high"])])
    return md.to_markdown(index=False, disable_numparse=True) + "\n"


def status_markdown(reference: Reference) -> str:
    """What the reference file holds and what could not be obtained, for every report."""
    lines = [f"Reference file: {len(reference.rows)} published number(s) from "
             f"{sum(1 for s in reference.studies.values() if s.get('obtained'))} of {len(reference.studies)} "
             f"stud(ies) fully typed in."]
    for line in reference.missing():
        lines.append(f"- Not (fully) obtained — {line}")
    return "\n".join(lines) + "\n"


# -- the paper's Tables 11 and 12 recounted from its own Tables 3-10 -----------------------------------------
def published_main_scores(reference: Reference, study: str) -> pd.DataFrame:
    """The study's published means of each dataset's main metric (``main_metrics``; overall scores, no class):
    the long form the Table 11 / 12 functions take (dataset, arch, strategy, metric, mean, se), as fractions."""
    metrics = reference.main_metrics.get(study, {})
    r = reference.rows
    r = r[(r["study"] == study) & (r["class"] == "") & (r["statistic"] == "mean")]
    r = r[[metrics.get(d) == m for d, m in zip(r["dataset"], r["metric"])]]
    return pd.DataFrame({"dataset": r["dataset"], "arch": r["arch"], "strategy": r["strategy"],
                         "metric": r["metric"], "mean": r["value"], "se": r["se"]}).reset_index(drop=True)


def _orders(reference: Reference, study: str, scores: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    from .tables import ordered

    eff = reference.effectiveness.get(study)
    datasets = ordered(scores["dataset"], list(reference.main_metrics.get(study, {})))
    archs = ordered(scores["arch"], (eff or {}).get("archs") or list(dict.fromkeys(scores["arch"])))
    strategies = list(dict.fromkeys(scores["strategy"]))
    return datasets, archs, strategies


RECOUNT11_COLUMNS = ["study", "dataset", "metric", "printed_arch", "printed_strategy", "printed_gain_pct", "arch",
                     "strategy", "gain_pct", "mean", "reference", "reference_mean", "tied_with", "same_method",
                     "same_gain", "agrees", "source"]


def recount_table11(reference: Reference) -> pd.DataFrame:
    """Per study with a printed ``best_per_dataset`` and per dataset: the printed best architecture, strategy and
    gain (%), and the same recounted from the study's published means by :func:`tables.best_per_dataset`.
    ``same_gain``: the recounted gain rounds to the printed one (within 0.05 points, the printed precision)."""
    from .tables import best_per_dataset

    out = []
    for study, printed in reference.best.groupby("study", sort=False):
        scores = published_main_scores(reference, study)
        datasets, archs, strategies = _orders(reference, study, scores)
        ref_strategy = printed["reference"].iloc[0]
        ours = {r["dataset"]: r for r in best_per_dataset(scores, ref_strategy, datasets, archs, strategies)
                .to_dict("records")}
        for p in printed.to_dict("records"):
            r = ours.get(p["dataset"], {})
            gain = r.get("gain_pct", math.nan)
            same_method = bool(r) and (r["arch"], r["strategy"]) == (p["arch"], p["strategy"])
            same_gain = bool(math.isfinite(gain) and abs(gain - p["gain_pct"]) <= 0.05 + 1e-9)
            out.append({"study": study, "dataset": p["dataset"],
                        "metric": reference.main_metrics[study].get(p["dataset"], ""),
                        "printed_arch": p["arch"], "printed_strategy": p["strategy"], "printed_gain_pct": p["gain_pct"],
                        "arch": r.get("arch"), "strategy": r.get("strategy"), "gain_pct": gain,
                        "mean": r.get("mean", math.nan), "reference": ref_strategy,
                        "reference_mean": r.get("reference_mean", math.nan), "tied_with": r.get("tied_with", ""),
                        "same_method": same_method, "same_gain": same_gain, "agrees": same_method and same_gain,
                        "source": p["source"]})
    return pd.DataFrame(out, columns=RECOUNT11_COLUMNS)


RECOUNT12_COLUMNS = ["study", "strategy", "reference", "threshold_pct", "total_printed", "total_recount",
                     "effectiveness_pct_printed", "effectiveness_pct_recount", "n_experiments", "n_datasets", "n_archs",
                     "agrees", "source"]  # with <arch>_printed / <arch>_recount after threshold_pct


def recount_table12(reference: Reference) -> pd.DataFrame:
    """Per study with a printed ``effectiveness`` table and per strategy (then ``Total``): for every architecture
    the printed count (``<arch>_printed``) and the recount (``<arch>_recount``) by
    :func:`tables.effectiveness_counts` from the study's published means (same reference strategy and
    threshold as printed), then total and effectiveness (%) both ways; ``agrees`` when every printed number
    is reproduced (the printed Total row gives column totals only)."""
    from .tables import TOTAL, effectiveness_counts

    out = []
    for study, eff in reference.effectiveness.items():
        scores = published_main_scores(reference, study)
        datasets, archs, strategies = _orders(reference, study, scores)
        printed_order = list(eff["rows"]["strategy"])
        strategies = [eff["reference"], *printed_order, *(s for s in strategies if s not in printed_order
                                                          and s != eff["reference"])]
        counts = {r["strategy"]: r for r in effectiveness_counts(
            scores, eff["reference"], eff["threshold"], datasets, eff["archs"], strategies).to_dict("records")}
        printed = {r["strategy"]: r for r in eff["rows"].to_dict("records")}
        printed[TOTAL] = {**eff["totals"], "total": math.nan, "effectiveness_pct": math.nan}
        for strategy in [*printed_order, *(s for s in counts if s not in printed_order and s != TOTAL), TOTAL]:
            c, pr = counts.get(strategy, {}), printed.get(strategy, {})
            row: dict = {"study": study, "strategy": strategy, "reference": eff["reference"],
                         "threshold_pct": eff["threshold_pct"]}
            agrees = bool(c) and (bool(pr) or strategy == TOTAL)  # a strategy the paper does not list: no
            for a in eff["archs"]:
                row[f"{a}_printed"] = pr.get(a, math.nan)
                row[f"{a}_recount"] = c.get(a, math.nan)
                agrees &= pr.get(a) is None or pr.get(a) == c.get(a)
            row["total_printed"], row["total_recount"] = pr.get("total", math.nan), c.get("total", math.nan)
            row["effectiveness_pct_printed"] = pr.get("effectiveness_pct", math.nan)
            row["effectiveness_pct_recount"] = c.get("effectiveness_pct", math.nan)
            for key in ("total", "effectiveness_pct"):
                p_val = pr.get(key, math.nan)
                if isinstance(p_val, (int, float)) and math.isfinite(p_val):
                    tol = 0.05 + 1e-9 if key == "effectiveness_pct" else 0
                    agrees &= abs(p_val - c.get(key, math.nan)) <= tol
            row["n_experiments"] = c.get("n_experiments", math.nan)
            row["n_datasets"], row["n_archs"] = len(datasets), len(eff["archs"])
            row["agrees"] = bool(agrees)
            row["source"] = eff["source"]
            out.append(row)
    return pd.DataFrame(out) if out else pd.DataFrame(columns=RECOUNT12_COLUMNS)


def _num(v, decimals: int = 0) -> str:
    return "–" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.{decimals}f}"


def recount_markdown(t11: pd.DataFrame, t12: pd.DataFrame, reference: Reference) -> str:
    """The printed Tables 11 and 12 next to their recount from the published Tables 3-10."""
    if t11.empty and t12.empty:
        return ("No study in the reference file has a printed best-method or effectiveness table "
                "(best_per_dataset / effectiveness): nothing to recount.\n")
    parts = []
    for study, part in t11.groupby("study", sort=False):
        md = pd.DataFrame({
            "Dataset": part["dataset"], "Main metric": part["metric"],
            "Printed": [f"{a} / {s} / {_num(g, 1)}%" for a, s, g in
                        zip(part["printed_arch"], part["printed_strategy"], part["printed_gain_pct"])],
            "Recount": [f"{a or 'n/a'} / {s or 'n/a'} / {_num(g, 1)}%" + (f" (ties: {t})" if t else "")
                        for a, s, g, t in zip(part["arch"], part["strategy"], part["gain_pct"], part["tied_with"])],
            "Gain, 2 decimals": [_num(g, 2) for g in part["gain_pct"]],
            "Agrees": ["yes" if a else "**no**" for a in part["agrees"]],
        })
        parts += [f"### {study}: best method per dataset ({part['source'].iloc[0]}), printed and recounted\n",
                  f"Recount: per dataset, the best (architecture, strategy) of the published means of its main metric, "
                  f"gain = 100 · (m − m_{part['reference'].iloc[0]}) / m_{part['reference'].iloc[0]} of the same "
                  f"architecture (the function the classification report uses). "
                  f"{int(part['agrees'].sum())} of {len(part)} rows reproduced.\n",
                  md.to_markdown(index=False, disable_numparse=True) + "\n"]
    for study, part in (t12.groupby("study", sort=False) if len(t12) else []):
        eff = reference.effectiveness[study]
        md = pd.DataFrame({"Strategy": part["strategy"]})
        for a in eff["archs"]:
            md[f"{a} printed"] = [_num(v) for v in part[f"{a}_printed"]]
            md[f"{a} recount"] = [bold(_num(c), p is not None and math.isfinite(p) and p != c)
                                  for p, c in zip(part[f"{a}_printed"], part[f"{a}_recount"])]
        md["Total printed"] = [_num(v) for v in part["total_printed"]]
        md["Total recount"] = [_num(v) for v in part["total_recount"]]
        md["Eff. % printed"] = [_num(v, 1) for v in part["effectiveness_pct_printed"]]
        md["Eff. % recount"] = [_num(v, 1) for v in part["effectiveness_pct_recount"]]
        n_diff = int((~part["agrees"]).sum())
        parts += [f"### {study}: effectiveness ({eff['source']}), printed and recounted\n",
                  f"Recount: per architecture, the datasets on which a strategy's published mean of the main metric "
                  f"exceeds {eff['reference']}'s by more than {eff['threshold_pct']:g}% (relative); effectiveness = "
                  f"total / ({int(part['n_datasets'].iloc[0])} datasets × {int(part['n_archs'].iloc[0])} "
                  f"architectures). Bold: a recount that differs from the printed count. "
                  + (f"{n_diff} of {len(part)} rows differ from the printed table: both are shown, the printed "
                     f"numbers cannot be recomputed from the published per-setting tables with this rule.\n"
                     if n_diff else "Every printed number is reproduced.\n"),
                  md.to_markdown(index=False, disable_numparse=True) + "\n"]
    return "\n".join(parts)


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def classification_settings(metric_files: list[str], intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our overall test scores per (dataset, arch, strategy, metric), each strategy at the learning rate the
    classification report selects (best mean validation primary metric): mean, SD and SE over seeds; with
    ``intervals`` (the classification report's intervals.csv) also each cell's ``ci_low`` / ``ci_high``."""
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
    out = pd.DataFrame(rows)
    if intervals is not None:
        cols = ["dataset", "arch", "strategy", "metric", "ci_low", "ci_high"]
        out = out.merge(intervals[cols] if len(intervals) else pd.DataFrame(columns=cols), how="left",
                        on=cols[:4], validate="one_to_one")
    return out


def build_published_report(metric_files: list[str], reference: Reference, out_dir: "str | Path | ReportFiles",
                           intervals: str | Path | None = None) -> dict[str, str]:
    """``side_by_side.csv`` (every setting of ours, matched or not), ``recount_table11.csv`` and
    ``recount_table12.csv`` (the papers' printed summary tables next to their recount from the published
    per-setting tables, :func:`recount_table11` / :func:`recount_table12`), ``side_by_side.md`` (the matched
    ones, the reference rows this run has no result for, the recounts, and what the reference file lacks).
    ``intervals``: the classification report's intervals.csv; its intervals and ``published_in_ci`` join the
    side by side. ``out_dir``: the report rule's files (:class:`medtl.report.outputs.ReportFiles`), or a folder."""
    from medtl.io import atomic_path

    from .document import caption
    from .outputs import report_files

    ours = classification_settings(metric_files, pd.read_csv(intervals) if intervals else None)
    side = side_by_side(ours, reference)
    missing = published_only(ours, reference, {"dataset": sorted(set(ours["dataset"]))})
    n = int((side["status"] == MATCHED).sum())
    text = [  # each part headed by the caption Snakemake's report shows beside it (report/published/<name>.rst)
        "# Our results and the published ones\n",
        caption("published/side_by_side"),
        f"{n} of {len(side)} setting(s) have a published number (the others have status \"{UNMATCHED}\" in "
        "[side_by_side.csv](side_by_side.csv)). Δ = ours − published.\n",
        matched_markdown(side),
    ]
    if len(missing):
        text.append(f"{len(missing)} published number(s) for these datasets have no result here (another "
                    "architecture, strategy or metric): "
                    + ", ".join(f"{r.dataset}/{r.arch}/{r.strategy}/{r.metric}" for r in missing.head(10).itertuples())
                    + (" ..." if len(missing) > 10 else "") + "\n")
    t11, t12 = recount_table11(reference), recount_table12(reference)
    text.append(status_markdown(reference))
    text += ["## The paper's summary tables recounted from its per-setting tables\n", caption("published/recount"),
             "[recount_table11.csv](recount_table11.csv) · [recount_table12.csv](recount_table12.csv)\n",
             recount_markdown(t11, t12, reference),
             "## Data\n", "### [side_by_side.csv](side_by_side.csv)\n", caption("published/side_by_side_data")]
    files = report_files("published", out_dir)
    written = {}
    for rel, obj in (("recount_table11.csv", t11), ("recount_table12.csv", t12),
                     ("side_by_side.csv", side), ("side_by_side.md", "\n".join(text))):
        with atomic_path(files(rel)) as tmp:
            if isinstance(obj, pd.DataFrame):
                obj.to_csv(tmp, index=False)
            else:
                tmp.write_text(obj)
        written[rel] = str(files(rel))
    return written
