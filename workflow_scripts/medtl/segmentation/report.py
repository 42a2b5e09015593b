"""Segmentation report: every job's metrics and test masks -> Dice tables and mask overlays.

Written to the report rule's files (:mod:`medtl.report.outputs`; each atomically, ``report.md`` last):

- ``all_runs.csv``              one row per job (val and test Dice, epochs, time)
- ``summary.csv``               mean and SE over seeds per (dataset, model, strategy), val and test
- ``segmentation_table.csv|md`` test Dice per structure and their mean, "mean ± se", model x strategy
- ``per_image.csv``             test Dice of every (job, image, structure)
- ``figures/masks_{dataset}.png``  a few test images: ground truth, then each model/strategy's masks
                                (lowest seed), Dice of the image (mean over its structures) on each
- ``report.md``                 every table and figure, each section headed by the caption Snakemake's HTML report
                                shows beside the same result (``report/segmentation/<name>.rst``)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medtl.data.dense_store import load_dense_store
from medtl.dense_report import (load_runs, markdown, mean_se_table, order_rows, save_figure, show_image, summarize,
                                write_csv, write_text)
from medtl.report.document import caption
from medtl.report.declaration import DENSE_REPORT
from medtl.report.outputs import ReportFiles, report_files

COLOURS = ((0.90, 0.10, 0.15), (0.15, 0.40, 0.95), (0.10, 0.75, 0.30), (0.95, 0.60, 0.10), (0.60, 0.20, 0.80))


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 RGB image with each structure's mask tinted in its colour."""
    img = np.asarray(image, np.float32) / 255.0
    rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img.copy()
    for k, m in enumerate(masks):
        sel = np.asarray(m) > 0
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.array(COLOURS[k % len(COLOURS)])
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def mask_figure(store, predictions: dict[tuple[str, str], tuple[dict, pd.DataFrame]], path: Path,
                n_images: int) -> None:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    test = list(store.indices("test"))[:n_images]
    rows = [("ground truth", None)] + [(f"{m} / {s}", v) for (m, s), v in predictions.items()]
    cols = max(1, len(test))
    fig = Figure(figsize=(2.1 * cols, 2.2 * len(rows)))
    for r, (title, pred) in enumerate(rows):
        for c, index in enumerate(test):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            if pred is None:
                show_image(ax, overlay(store.images[index], store.masks[index]))
            else:
                npz, per_image = pred
                pos = np.flatnonzero(npz["index"] == index)
                masks = npz["masks"][pos[0]] if len(pos) else np.zeros_like(store.masks[index])
                show_image(ax, overlay(store.images[index], masks))
                scores = per_image.loc[per_image["index"] == index, "dice"]
                if len(scores):
                    ax.text(1, 1, f"Dice {scores.mean():.2f}", fontsize=6, color="white", va="top",
                            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
            if r == 0:
                ax.set_title(store.image_id(index), fontsize=6)
    handles = [Patch(color=COLOURS[k % len(COLOURS)], label=s) for k, s in enumerate(store.classes)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(f"{store.meta['name']}: test images, masks from the ground-truth box prompts (lowest seed)",
                 fontsize=9)
    fig.subplots_adjust(bottom=0.06, wspace=0.05, hspace=0.15)
    save_figure(fig, path)


def build_report(metric_files: list[str], prediction_files: list[str], per_image_files: list[str],
                 store_dirs: dict[str, str], out_dir: "str | ReportFiles", model_order: list[str] | None = None,
                 strategy_order: list[str] | None = None, n_images: int = DENSE_REPORT["n_images"]) -> dict[str, str]:
    """``prediction_files[i]`` and ``per_image_files[i]`` belong to ``metric_files[i]``."""
    out = report_files("segmentation", out_dir)  # the rule's files (medtl.report.outputs), or a folder
    files = [str(f) for f in metric_files]
    runs = order_rows(load_runs(files, "segmentation"), model_order, strategy_order)
    structures: dict[str, list[str]] = {}
    for f in files:
        data = json.loads(Path(f).read_text())
        structures.setdefault(data["dataset"], list(data["classes"]))
    names = list(dict.fromkeys(s for v in structures.values() for s in v))
    columns = [f"{split}_{m}" for split in ("test", "val") for m in ("dice", *(f"dice_{s}" for s in names))]
    summary = order_rows(summarize(runs, columns), model_order, strategy_order)
    labels = {f"test_dice_{s}": f"Dice {s.replace('_', ' ')}" for s in names}
    table = mean_se_table(summary, {**labels, "test_dice": "Mean Dice"})
    per_image = []
    for mfile, ifile in zip(files, per_image_files):
        row = runs[runs["file"] == mfile].iloc[0]
        part = pd.read_csv(ifile, dtype={"image_id": str})
        per_image.append(part.assign(dataset=row["dataset"], model=row["model"], strategy=row["strategy"],
                                     seed=int(row["seed"])))
    per_image = pd.concat(per_image, ignore_index=True) if per_image else pd.DataFrame()
    write_csv(runs, out("all_runs.csv"))
    write_csv(summary, out("summary.csv"))
    write_csv(table, out("segmentation_table.csv"))
    write_text(markdown(table), out("segmentation_table.md"))
    write_csv(per_image, out("per_image.csv"))
    figures = []
    for ds in sorted(structures):
        chosen: dict[tuple[str, str], tuple[int, int]] = {}
        for i, mfile in enumerate(files):
            row = runs[runs["file"] == mfile].iloc[0]
            if row["dataset"] != ds:
                continue
            key, seed = (row["model"], row["strategy"]), int(row["seed"])
            if key not in chosen or seed < chosen[key][0]:
                chosen[key] = (seed, i)
        ordered = order_rows(pd.DataFrame([{"dataset": ds, "model": m, "strategy": s} for m, s in chosen]),
                             model_order, strategy_order)
        preds = {}
        for m, s in zip(ordered["model"], ordered["strategy"]):
            seed, i = chosen[(m, s)]
            with np.load(prediction_files[i]) as npz:
                arrays = {k: npz[k] for k in ("index", "masks")}
            preds[(m, s)] = (arrays, per_image[(per_image["dataset"] == ds) & (per_image["model"] == m)
                                               & (per_image["strategy"] == s) & (per_image["seed"] == seed)])
        path = out(f"figures/masks_{ds}.png")
        mask_figure(load_dense_store(store_dirs[ds], task="segmentation"), preds, path, n_images)
        figures.append(path)
    # each section headed by the caption Snakemake's report shows beside the same result (report/segmentation/)
    lines = ["# Segmentation", "", f"{len(runs)} jobs.", "", "## Dice (test)", "",
             caption("segmentation/segmentation_table"),
             "[CSV](segmentation_table.csv) · [Markdown](segmentation_table.md) · "
             "every image: [per_image.csv](per_image.csv)",
             "", markdown(table), "## Figures", "", caption("segmentation/masks")]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    lines += ["## Data", "", "### [all_runs.csv](all_runs.csv)", "", caption("segmentation/all_runs"),
              "### [summary.csv](summary.csv)", "", caption("segmentation/summary")]
    write_text("\n".join(lines), out("report.md"))
    return {p.name: str(p) for p in figures}
