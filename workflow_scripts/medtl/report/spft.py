"""The second study's report: SPFT ablation, per-class AUC, top-k against all layers, and the
published numbers side by side. Entry point: :func:`build_spft_report`.

Input: the ``metrics.json`` of every SPFT-type training job, and each SPFT variant's resolved settings
(its config entry over SPFT's defaults). The variants' roles come from their settings, not their names:

- for each architecture, the *main* variant is the first (in config order) with every component on
  (unfreezing, i.e. ``top_k`` other than 0, progressive; ``class_weights``; ``ema``) that has runs on it;
- the *ablation* rows are the variants that differ from the main one only in those components
  (settings without effect are ignored: ``top_k``, ``progressive`` and ``unfreeze_every`` when
  ``top_k: 0`` keeps the backbone frozen, ``head_epochs`` then too unless it starts class weights or EMA,
  ``refine_gamma`` without class weights, ``ema_decay`` without EMA, ``components_from`` without either),
  in the order head only (``top_k: 0``) -> + progressive unfreezing -> + class weights -> + EMA (full SPFT);
- the *top-k* rows are the full variants that differ from the main one only in ``top_k``.

Scores: test macro AUROC (and per-class test AUROC) at the learning rate with the best mean validation
macro AUROC over seeds (ties: the smaller rate), as mean and sample standard deviation (ddof = 1) over
the seeds; a single seed has no standard deviation (n/a), a NaN seed makes the group NaN.

Written to the report rule's files (:mod:`medtl.report.outputs`; each atomically, ``report.md`` last): ``runs.csv`` (one row per job),
``ablation.csv|md``, ``per_class.csv|md``, ``topk.csv|md``, ``side_by_side.csv|md`` (every setting with its
published counterpart or "no published counterpart"; the Markdown lists the matched ones),
``figures/per_class_auc.png`` and ``report.md``. Each table and report.md section opens with the caption Snakemake's
HTML report shows beside the same result (``report/spft/<name>.rst``, :mod:`medtl.report.document`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.io import atomic_path

from .collect import MetricsFileError, load_run
from .document import caption
from .outputs import ReportFiles, report_files
from .published import MATCHED, UNMATCHED, Reference, fmt, matched_markdown, side_by_side, status_markdown
from .tables import markdown, ordered

METRIC = "auroc"
#: the ablation's components; "unfreezing" is ``top_k`` other than 0 (``top_k: 0``: the head trains alone)
COMPONENTS = ("unfreezing", "class_weights", "ema")
#: settings that can have no effect, depending on the components (see :func:`effective`)
INERT = ("top_k", "progressive", "unfreeze_every", "head_epochs", "refine_gamma", "ema_decay", "components_from")
CHAIN = {(False, False, False): "Head only", (True, False, False): "+ progressive unfreezing",
         (True, True, False): "+ class weights", (True, True, True): "+ EMA (full SPFT)"}


# -- reading ----------------------------------------------------------------------------------------------
def _score(value) -> float:
    return math.nan if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
        else float(value)


def load_spft_runs(metric_files: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per job: keys, val/test macro AUROC; one row per job and class: test/val AUROC and support).

    Files are validated as for the classification report (path and contents must agree); a file
    without AUROC or without ``per_class`` is refused, naming it."""
    files = [str(f) for f in metric_files]
    if not files:
        raise ValueError("no metrics files given: the config has no SPFT-type strategy with runs")
    runs, classes, seen = [], [], {}
    for path in files:
        row, _ = load_run(path)
        key = (row["dataset"], row["arch"], row["strategy"], row["lr"], row["seed"])
        if key in seen:
            raise MetricsFileError(path, f"duplicate job, already read from {seen[key]}")
        seen[key] = path
        if f"val_{METRIC}" not in row or f"test_{METRIC}" not in row:
            raise MetricsFileError(path, f"no '{METRIC}' score: the SPFT report needs AUROC (add it to the "
                                         f"dataset's metrics)")
        data = json.loads(Path(path).read_text())
        per_class = data.get("per_class")
        if not isinstance(per_class, dict) or not isinstance(per_class.get("test"), dict):
            raise MetricsFileError(path, "lacks per_class.test (per-class scores)")
        runs.append({k: row[k] for k in ("dataset", "arch", "strategy", "lr", "seed")} |
                    {"val_auroc": row[f"val_{METRIC}"], "test_auroc": row[f"test_{METRIC}"],
                     "best_epoch": row["best_epoch"], "epochs_run": row["epochs_run"], "file": path})
        val = per_class.get("val") or {}
        for name, scores in per_class["test"].items():
            if not isinstance(scores, dict):
                raise MetricsFileError(path, f"per_class.test.{name} should be an object")
            classes.append({k: row[k] for k in ("dataset", "arch", "strategy", "lr", "seed")} |
                           {"class": str(name), "test_auroc": _score(scores.get("auroc")),
                            "val_auroc": _score((val.get(name) or {}).get("auroc")),
                            "support": _score(scores.get("support"))})
    return pd.DataFrame(runs), pd.DataFrame(classes)


# -- statistics ---------------------------------------------------------------------------------------------
def mean_sd(values) -> tuple[float, float]:
    """(mean, sample standard deviation) over seeds; NaN-propagating, SD NaN for a single seed."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0 or np.isnan(x).any():
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def select(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, strategy): the lr with the best mean validation AUROC, and its test mean / SD."""
    out = []
    for (ds, arch, strategy), group in runs.groupby(["dataset", "arch", "strategy"], sort=False):
        per_lr = []
        for lr, g in group.groupby("lr"):
            val, _ = mean_sd(g["val_auroc"])
            per_lr.append((math.isnan(val), -val if not math.isnan(val) else 0.0, lr, g))
        _, _, lr, g = sorted(per_lr, key=lambda t: t[:3])[0]
        mean, sd = mean_sd(g["test_auroc"])
        val_mean, val_sd = mean_sd(g["val_auroc"])
        out.append({"dataset": ds, "arch": arch, "strategy": strategy, "lr": float(lr),
                    "lrs_tried": " ".join(f"{v:g}" for v in sorted(group["lr"].unique())),
                    "n_seeds": len(g), "seeds": " ".join(str(s) for s in sorted(g["seed"])),
                    "mean": mean, "sd": sd, "val_mean": val_mean, "val_sd": val_sd})
    return pd.DataFrame(out)


def per_class_stats(classes: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, strategy, class) at the selected lr: test AUROC mean / SD over seeds, support."""
    chosen = {(r["dataset"], r["arch"], r["strategy"]): r["lr"] for r in selected.to_dict("records")}
    out = []
    for (ds, arch, strategy, lr), group in classes.groupby(["dataset", "arch", "strategy", "lr"], sort=False):
        if chosen.get((ds, arch, strategy)) != lr:
            continue
        for name, g in group.groupby("class", sort=False):
            mean, sd = mean_sd(g["test_auroc"])
            out.append({"dataset": ds, "arch": arch, "strategy": strategy, "lr": float(lr), "class": name,
                        "n_seeds": len(g), "mean": mean, "sd": sd,
                        "support": float(g["support"].mean())})
    return pd.DataFrame(out, columns=["dataset", "arch", "strategy", "lr", "class", "n_seeds", "mean", "sd",
                                      "support"])


# -- roles of the variants ------------------------------------------------------------------------------------
def effective(settings: dict) -> dict:
    """The settings that change what a variant does (inert ones dropped), with ``unfreezing`` added."""
    s = dict(settings)
    s["unfreezing"] = s.get("top_k", "all") != 0
    weights, ema = bool(s.get("class_weights", True)), bool(s.get("ema", True))
    if not s["unfreezing"]:
        for key in ("top_k", "progressive", "unfreeze_every"):
            s.pop(key, None)
        if not (weights or ema) or s.get("components_from") == "start":
            s.pop("head_epochs", None)  # it would only say when class weights or EMA start
    if not weights:
        s.pop("refine_gamma", None)
    if not ema:
        s.pop("ema_decay", None)
    if not (weights or ema):
        s.pop("components_from", None)
    return s


def _inert_only(a: dict, b: dict, keys: tuple[str, ...]) -> bool:
    """Keys present in only one of the two are all inert in the other."""
    return all(k in INERT for k in (set(a) ^ set(b)) - set(keys))


def differs_only_in(a: dict, b: dict, keys: tuple[str, ...]) -> bool:
    ea, eb = effective(a), effective(b)
    common = (set(ea) & set(eb)) - set(keys)
    return all(ea[k] == eb[k] for k in common) and _inert_only(ea, eb, keys)


def flags(settings: dict) -> tuple[bool, bool, bool]:
    e = effective(settings)
    return tuple(bool(e.get(c, True)) for c in COMPONENTS)


def flag_label(settings: dict) -> str:
    f = flags(settings)
    if f in CHAIN:
        return CHAIN[f]
    parts = ["progressive unfreezing" if f[0] else "head only"]
    parts += [name for on, name in zip(f[1:], ("class weights", "EMA")) if on]
    return " + ".join(parts)


def topk_label(settings: dict, family: str = "") -> str:
    unit = "layers" if family == "vit" else "blocks"
    k = settings.get("top_k")
    return f"all {unit}" if k == "all" else f"top-{k} {unit}"


def roles(settings: dict[str, dict], strategies_with_runs: list[str]) -> dict[str, object]:
    """{'main': name or None, 'ablation': [names in chain order], 'topk': [names, main first]}
    among ``strategies_with_runs`` (config order)."""
    names = [s for s in strategies_with_runs if s in settings]
    main = next((s for s in names if all(flags(settings[s])) and settings[s].get("progressive", True)), None)
    if main is None:
        return {"main": None, "ablation": [], "topk": []}
    ablation = [s for s in names if differs_only_in(settings[s], settings[main], COMPONENTS)]
    # one row per combination of components: the first variant in config order (main for the full one)
    by_flags: dict[tuple, str] = {}
    for s in [main, *ablation]:
        by_flags.setdefault(flags(settings[s]), s)
    chain = list(CHAIN)
    ablation = sorted(by_flags.values(), key=lambda s: (chain.index(flags(settings[s]))
                                                        if flags(settings[s]) in CHAIN else len(chain),
                                                        names.index(s)))
    topk = [s for s in names if all(flags(settings[s])) and differs_only_in(settings[s], settings[main], ("top_k",))]
    by_k: dict[object, str] = {}
    for s in [main, *topk]:
        by_k.setdefault(settings[s].get("top_k"), s)
    return {"main": main, "ablation": ablation, "topk": list(by_k.values())}


# -- tables -----------------------------------------------------------------------------------------------------
def _cell(mean: float, sd: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{mean:.3f} ± {fmt(sd)}"


def _vs_published(rows: pd.DataFrame) -> str:
    m = rows[rows["status"] == MATCHED]
    if m.empty:
        return UNMATCHED
    return "; ".join(f"{r.dataset}: {fmt(r.published)} (Δ {fmt(r.difference, sign=True)})" for r in m.itertuples())


def variant_table(side: pd.DataFrame, arch: str, names: list[str], datasets: list[str], settings: dict,
                  kind: str, family: str) -> tuple[pd.DataFrame, str]:
    """Rows = variants, columns = datasets (test macro AUROC, mean ± SD); CSV rows and Markdown."""
    part = side[(side["arch"] == arch) & (side["class"] == "")]
    datasets = [d for d in datasets if d in set(part["dataset"])]
    csv, md = [], []
    for s in names:
        rows = part[part["strategy"] == s]
        if rows.empty:
            continue
        label = flag_label(settings[s]) if kind == "ablation" else topk_label(settings[s], family)
        f = flags(settings[s])
        line = {"Configuration": label, "Strategy": s}
        if kind == "ablation":
            line.update({"Progressive unfreezing": "✓" if f[0] else "–", "Class weights": "✓" if f[1] else "–",
                         "EMA": "✓" if f[2] else "–"})
        else:
            line["top_k"] = str(settings[s].get("top_k"))
        for ds in datasets:
            r = rows[rows["dataset"] == ds]
            line[ds] = _cell(r["mean"].iloc[0], r["sd"].iloc[0]) if len(r) else "n/a"
        line["vs. published"] = _vs_published(rows)
        md.append(line)
        for r in rows.to_dict("records"):
            csv.append({"arch": arch, "configuration": label, "table": kind, **dict(zip(COMPONENTS, f)),
                        "top_k": settings[s].get("top_k"), **r})
    return pd.DataFrame(csv), markdown(pd.DataFrame(md)) if md else ""


def per_class_markdown(side: pd.DataFrame, dataset: str, arch: str, strategy: str) -> str:
    part = side[(side["dataset"] == dataset) & (side["arch"] == arch) & (side["strategy"] == strategy)]
    classes = part[part["class"] != ""]
    overall = part[part["class"] == ""]
    rows = [{"Class": r["class"], "Test AUROC (mean ± SD)": _cell(r["mean"], r["sd"]),
             "Seeds": str(r["n_seeds"]), "Positives (test)": f"{r['support']:g}" if math.isfinite(r["support"])
             else "n/a",
             "Published": fmt(r["published"]) if r["status"] == MATCHED else UNMATCHED,
             "Δ": fmt(r["difference"], sign=True) if r["status"] == MATCHED else "–"}
            for r in classes.to_dict("records")]
    for r in overall.to_dict("records"):
        rows.append({"Class": "**macro AUROC**", "Test AUROC (mean ± SD)": _cell(r["mean"], r["sd"]),
                     "Seeds": str(r["n_seeds"]), "Positives (test)": "",
                     "Published": fmt(r["published"]) if r["status"] == MATCHED else UNMATCHED,
                     "Δ": fmt(r["difference"], sign=True) if r["status"] == MATCHED else "–"})
    return markdown(pd.DataFrame(rows))


# -- figure -------------------------------------------------------------------------------------------------------
def per_class_figure(per_class: pd.DataFrame, mains: dict[str, str], datasets: list[str], archs: list[str],
                     path: str | Path) -> None:
    """One panel per dataset: per-class test AUROC of each architecture's main SPFT variant, error bars = SD."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(1, len(datasets))
    widths = [len(set(per_class.loc[per_class["dataset"] == d, "class"])) for d in datasets] or [1]
    fig = Figure(figsize=(max(6.0, 0.55 * max(widths) * max(1, len(archs)) ** 0.5 + 2), 3.2 * n))
    axes = [fig.add_subplot(n, 1, i + 1) for i in range(n)]
    if not datasets:
        axes[0].text(0.5, 0.5, "no SPFT results", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    for ax, ds in zip(axes, datasets):
        part = per_class[per_class["dataset"] == ds]
        classes = list(dict.fromkeys(part["class"]))
        shown = [a for a in archs if a in mains and ((part["arch"] == a) & (part["strategy"] == mains[a])).any()]
        width = 0.8 / max(1, len(shown))
        x = np.arange(len(classes))
        for j, arch in enumerate(shown):
            rows = part[(part["arch"] == arch) & (part["strategy"] == mains[arch])].set_index("class")
            mean = np.array([rows["mean"].get(c, np.nan) for c in classes], dtype=np.float64)
            sd = np.array([rows["sd"].get(c, np.nan) for c in classes], dtype=np.float64)
            pos = x + (j - (len(shown) - 1) / 2) * width
            ax.bar(pos, np.nan_to_num(mean, nan=0.0), width, yerr=np.where(np.isfinite(sd), sd, 0.0), capsize=2,
                   label=f"{arch} ({mains[arch]})")
            for i in np.flatnonzero(~np.isfinite(mean)):
                ax.text(pos[i], 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(x, classes, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Test AUROC")
        ax.set_title(f"{ds}: per-class AUROC (mean ± SD over seeds)")
        ax.grid(axis="y", alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


# -- entry point ----------------------------------------------------------------------------------------------------
def _write(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        if isinstance(obj, pd.DataFrame):
            obj.to_csv(tmp, index=False)
        else:
            tmp.write_text(obj)


def build_spft_report(metric_files: list[str], out_dir: "str | ReportFiles", settings: dict[str, dict], reference: Reference,
                      strategy_order: list[str] | None = None, arch_order: list[str] | None = None,
                      families: dict[str, str] | None = None) -> dict[str, str]:
    """Build every table and the figure; return {path relative to the report's folder: path written}.

    ``out_dir``: the report rule's files (:class:`medtl.report.outputs.ReportFiles`), or a folder.

    ``settings``: resolved settings of every SPFT variant (config entry over SPFT's defaults), by name.
    ``reference``: the published numbers (:func:`medtl.report.published.load_reference`).
    ``families``: architecture -> family ("vit" labels top-k rows in layers)."""
    runs, classes = load_spft_runs(metric_files)
    unknown = sorted(set(runs["strategy"]) - set(settings))
    if unknown:
        raise ValueError(f"runs of strategies without settings: {unknown}; pass every SPFT variant's settings")
    families = families or {}
    datasets = sorted(set(runs["dataset"]))
    archs = ordered(runs["arch"], arch_order)
    strategies = ordered(runs["strategy"], strategy_order or list(settings))
    selected = select(runs)
    per_class = per_class_stats(classes, selected)

    ours = pd.concat([selected.assign(metric=METRIC, **{"class": ""}),
                      per_class.assign(metric=METRIC)], ignore_index=True)
    side = side_by_side(ours[["dataset", "arch", "strategy", "metric", "class", "lr", "n_seeds", "mean", "sd",
                              "support"]], reference)

    files = report_files("spft", out_dir)
    written: dict[str, str] = {}

    def put(rel: str, obj) -> None:
        _write(obj, files(rel))
        written[rel] = str(files(rel))

    put("runs.csv", runs)

    abl_csv, topk_csv, abl_md, topk_md, pc_md, mains = [], [], [], [], [], {}
    for arch in archs:
        have = [s for s in strategies if ((runs["arch"] == arch) & (runs["strategy"] == s)).any()]
        r = roles(settings, have)
        if r["main"] is None:
            abl_md.append(f"### {arch}\n\nNo variant of {arch} has every component on; no ablation table.\n")
            continue
        mains[arch] = r["main"]
        csv, md = variant_table(side, arch, r["ablation"], datasets, settings, "ablation", families.get(arch, ""))
        abl_csv.append(csv)
        abl_md.append(f"### {arch}\n\n{md}")
        csv, md = variant_table(side, arch, r["topk"], datasets, settings, "topk", families.get(arch, ""))
        topk_csv.append(csv)
        if len(r["topk"]) > 1:
            topk_md.append(f"### {arch}\n\n{md}")
        else:
            topk_md.append(f"### {arch}\n\nOnly {topk_label(settings[r['main']], families.get(arch, ''))} "
                           f"({r['main']}) has runs: no variant differing only in top_k.\n")
        for ds in datasets:
            if ((per_class["dataset"] == ds) & (per_class["arch"] == arch) &
                    (per_class["strategy"] == r["main"])).any():
                pc_md.append(f"### {ds} / {arch} ({r['main']})\n\n" +
                             per_class_markdown(side, ds, arch, r["main"]))

    # each table opens with the caption Snakemake's report shows beside it (report/spft/<name>.rst)
    caption_ab = caption("spft/ablation") + "✓ = component on.\n\n"
    caption_k = caption("spft/topk") + "\n"
    caption_pc = caption("spft/per_class") + "\n"
    empty = pd.DataFrame(columns=["arch", "configuration", "table", *COMPONENTS, "top_k", "dataset", "strategy"])
    ablation_md = caption_ab + "\n".join(abl_md)
    topk_text = caption_k + "\n".join(topk_md)
    per_class_text = caption_pc + ("\n".join(pc_md) if pc_md else "No per-class scores.\n")
    put("ablation.csv", pd.concat(abl_csv, ignore_index=True) if abl_csv else empty)
    put("ablation.md", ablation_md)
    put("topk.csv", pd.concat(topk_csv, ignore_index=True) if topk_csv else empty)
    put("topk.md", topk_text)
    put("per_class.csv", per_class)
    put("per_class.md", per_class_text)
    put("side_by_side.csv", side)
    n_matched = int((side["status"] == MATCHED).sum())
    side_md = (caption("spft/side_by_side") + f"\nOne row per matched setting ({n_matched} of {len(side)}; all of "
               "them in [side_by_side.csv](side_by_side.csv)).\n\n"
               + matched_markdown(side) + "\n" + status_markdown(reference))
    put("side_by_side.md", side_md)
    name = "figures/per_class_auc.png"
    per_class_figure(per_class, mains, datasets, archs, files(name))
    written[name] = str(files(name))

    seeds = " ".join(str(s) for s in sorted(set(runs["seed"])))
    parts = [
        "# SPFT report\n",
        f"{len(runs)} training jobs of {len(set(runs['strategy']))} SPFT variant(s). Datasets: {', '.join(datasets)}. "
        f"Architectures: {', '.join(archs)}. Seeds: {seeds}.\n",
        "Each section starts with the caption Snakemake's HTML report (`snakemake --report report.html`) shows beside "
        "the same result.\n",
        "## Ablation\n", "[CSV](ablation.csv)\n", ablation_md,
        "## Per-class AUROC\n", "[CSV](per_class.csv)\n", per_class_text,
        caption("spft/per_class_auc"), "![per-class AUROC](figures/per_class_auc.png)\n",
        "## Top-k layers against all layers\n", "[CSV](topk.csv)\n", topk_text,
        "## Published results\n", "[CSV](side_by_side.csv)\n", side_md,
        "## Data\n", "### [runs.csv](runs.csv)\n", caption("spft/runs"),
        "### [side_by_side.csv](side_by_side.csv)\n", caption("spft/side_by_side_data"),
    ]
    put("report.md", "\n".join(parts))
    return written
