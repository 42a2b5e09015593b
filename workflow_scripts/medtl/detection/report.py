"""Detection report: every job's metrics and predictions -> tables and box overlays.

Written to the report rule's files (:mod:`medtl.report.outputs`; each atomically, ``report.md`` last):

- ``all_runs.csv``          one row per job (val and test scores, epochs, time)
- ``summary.csv``           mean and SE over seeds per (dataset, model, strategy), val and test
- ``detection_table.csv|md`` test mAP@50, mAP@50-95, precision, recall as "mean ± se", model x strategy
- ``per_class.csv|md``      test mAP@50 and mAP@50-95 per class, mean and SE over seeds (empty without per-class scores)
- ``figures/boxes_{dataset}.png``  a few test images: ground truth (dashed) and each model/strategy's
                            best-scoring boxes (solid; as many per image as it has ground-truth boxes,
                            score >= ``box_conf``), lowest seed
- ``report.md``             every table and figure, each section headed by the caption Snakemake's HTML report shows
                            beside the same result (``report/detection/<name>.rst``)
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.dense_store import load_dense_store
from medtl.dense_report import (load_runs, markdown, mean_se_table, order_rows, save_figure, show_image, summarize,
                                write_csv, write_text)
from medtl.report.document import caption
from medtl.report.declaration import DENSE_REPORT
from medtl.report.outputs import ReportFiles, report_files
from medtl.report.select import mean_se

METRICS = {"map50": "mAP@50", "map50_95": "mAP@50-95", "precision": "Precision", "recall": "Recall"}
COLOURS = ("#e6194b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe")


def per_class_table(metric_files: list[str], runs: pd.DataFrame) -> pd.DataFrame:
    import json

    rows = []
    for path in metric_files:
        data = json.loads(Path(path).read_text())
        for cls, scores in data.get("per_class", {}).get("test", {}).items():
            rows.append({"dataset": data["dataset"], "model": data["model"], "strategy": data["strategy"],
                         "seed": data["seed"], "class": cls, "instances": scores.get("instances"),
                         **{m: math.nan if scores.get(m) is None else float(scores[m]) for m in ("map50", "map50_95")}})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    out = []
    for (ds, model, strategy, cls), part in df.groupby(["dataset", "model", "strategy", "class"], sort=False):
        row = {"dataset": ds, "model": model, "strategy": strategy, "class": cls, "n_seeds": len(part),
               "instances": int(part["instances"].max())}
        for m in ("map50", "map50_95"):
            row[f"{m}_mean"], row[f"{m}_se"] = mean_se(part[m].to_numpy(dtype=np.float64))
        out.append(row)
    return pd.DataFrame(out)


def box_figure(store, predictions: dict[tuple[str, str], pd.DataFrame], path: Path, n_images: int,
               box_conf: float) -> None:
    """Rows: ground truth, then each (model, strategy); columns: the first test images that have boxes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    test = list(store.indices("test"))
    with_boxes = [i for i in test if len(store.boxes_of(i)[0])]
    images = (with_boxes + [i for i in test if i not in with_boxes])[:n_images]
    rows = [("ground truth", None)] + [(f"{m} / {s}", df) for (m, s), df in predictions.items()]
    fig = Figure(figsize=(2.1 * max(1, len(images)), 2.2 * len(rows)))
    colour = {c: COLOURS[i % len(COLOURS)] for i, c in enumerate(store.classes)}
    for r, (title, df) in enumerate(rows):
        for c, index in enumerate(images):
            ax = fig.add_subplot(len(rows), max(1, len(images)), r * max(1, len(images)) + c + 1)
            show_image(ax, store.images[index])
            boxes, ids = store.boxes_of(index)
            for (x1, y1, x2, y2), k in zip(boxes, ids):  # ground truth, dashed, on every row
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, linestyle="--",
                                       linewidth=1.0, edgecolor=colour[store.classes[k]]))
            if df is not None:  # a model's best guesses, however confident: a weak model still shows its boxes
                shown = df[(df["index"] == index) & (df["score"] >= box_conf)]
                shown = shown.sort_values("score", ascending=False).head(max(1, len(ids)))
                for p in shown.to_dict("records"):
                    edge = colour.get(p["class"], "yellow")
                    ax.add_patch(Rectangle((p["x1"] - 0.5, p["y1"] - 0.5), p["x2"] - p["x1"], p["y2"] - p["y1"],
                                           fill=False, linewidth=1.4, edgecolor=edge))
                    ax.text(p["x1"], p["y1"], f"{p['score']:.2f}", fontsize=5, color="white", va="bottom",
                            bbox={"facecolor": edge, "pad": 0.5, "linewidth": 0})
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
            if r == 0:
                ax.set_title(store.image_id(index), fontsize=6)
    handles = [Line2D([], [], color=colour[c], label=c) for c in store.classes]
    handles += [Line2D([], [], color="grey", linestyle="--", label="ground truth"),
                Line2D([], [], color="grey", label="predicted: top boxes per image, with score")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(f"{store.meta['name']}: test images, boxes (lowest seed)", fontsize=9)
    fig.subplots_adjust(bottom=0.06, wspace=0.05, hspace=0.15)
    save_figure(fig, path)


def build_report(metric_files: list[str], prediction_files: list[str], store_dirs: dict[str, str],
                 out_dir: "str | ReportFiles",
                 model_order: list[str] | None = None, strategy_order: list[str] | None = None,
                 n_images: int = DENSE_REPORT["n_images"],
                 box_conf: float = DENSE_REPORT["box_conf"]) -> dict[str, str]:
    """``prediction_files[i]`` belongs to ``metric_files[i]``; ``store_dirs``: dataset -> prepared store."""
    out = report_files("detection", out_dir)  # the rule's files (medtl.report.outputs), or a folder
    files = [str(f) for f in metric_files]
    runs = order_rows(load_runs(files, "detection"), model_order, strategy_order)
    columns = [f"{s}_{m}" for s in ("test", "val") for m in METRICS]
    summary = order_rows(summarize(runs, columns), model_order, strategy_order)
    table = mean_se_table(summary, {f"test_{m}": label for m, label in METRICS.items()})
    per_class = per_class_table(files, runs)
    written = {}
    write_csv(runs, out("all_runs.csv"))
    write_csv(summary, out("summary.csv"))
    write_csv(table, out("detection_table.csv"))
    write_text(markdown(table), out("detection_table.md"))
    if not per_class.empty:
        per_class = order_rows(per_class, model_order, strategy_order)
        pc = mean_se_table(per_class, {"map50": "AP@50", "map50_95": "AP@50-95"}, best_within=["dataset", "class"])
        pc.insert(3, "Class", per_class["class"].to_numpy())
        pc.insert(4, "Instances", per_class["instances"].to_numpy())
        pc_md = markdown(pc)
    else:
        pc_md = "No per-class scores: the jobs' metrics files have none.\n"
    write_csv(per_class, out("per_class.csv"))
    write_text(pc_md, out("per_class.md"))
    # figures: predictions of the lowest seed of each (model, strategy)
    preds = {}
    for mfile, pfile in zip(files, prediction_files):
        row = runs[runs["file"] == mfile].iloc[0]
        preds.setdefault(row["dataset"], []).append((row["model"], row["strategy"], int(row["seed"]), str(pfile)))
    figures = []
    for ds, items in sorted(preds.items()):
        chosen: dict[tuple[str, str], tuple[int, str]] = {}
        for model, strategy, seed, pfile in items:
            if (model, strategy) not in chosen or seed < chosen[(model, strategy)][0]:
                chosen[(model, strategy)] = (seed, pfile)
        ordered = order_rows(pd.DataFrame([{"dataset": ds, "model": m, "strategy": s} for m, s in chosen]),
                             model_order, strategy_order)
        frames = {(m, s): pd.read_csv(chosen[(m, s)][1], dtype={"class": str, "image_id": str, "score": float})
                  for m, s in zip(ordered["model"], ordered["strategy"])}
        path = out(f"figures/boxes_{ds}.png")
        box_figure(load_dense_store(store_dirs[ds], task="detection"), frames, path, n_images, box_conf)
        figures.append(path)
    # each section headed by the caption Snakemake's report shows beside the same result (report/detection/)
    lines = ["# Detection", "", f"{len(runs)} jobs.", "", "## Scores (test)", "", caption("detection/detection_table"),
             "[CSV](detection_table.csv) · [Markdown](detection_table.md)", "", markdown(table),
             "## Per class (test)", "", caption("detection/per_class"), "[CSV](per_class.csv)", "", pc_md,
             "## Figures", "", caption("detection/boxes")]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    lines += ["## Data", "", "### [all_runs.csv](all_runs.csv)", "", caption("detection/all_runs"),
              "### [summary.csv](summary.csv)", "", caption("detection/summary")]
    write_text("\n".join(lines), out("report.md"))
    written.update({p.name: str(p) for p in figures})
    return written
