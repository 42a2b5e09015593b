"""What each report writes, declared once: every file, its name in the report rule's outputs, and, for the
files Snakemake's HTML report shows, its caption (``report/<study>/<caption>.rst``), subcategory and label.

The report rules take their outputs from here (``rules/common.smk``: ``report_outputs``, which wraps the shown
ones in Snakemake's ``report()`` with their captions, one helper for every study), and the writers write each
file to the path its rule names for it (:class:`ReportFiles`, built from ``snakemake.output``): a writer that
writes a file its rule does not declare stops at that file, naming it, and the rule checks that every declared
file was written. The writers head the sections of their ``report.md`` with the same captions
(:func:`medtl.report.document.caption`). Nothing here imports more than the standard library: the workflow
reads it while it parses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: a file name's dataset part
DATASET = "{dataset}"


@dataclass(frozen=True)
class Output:
    """One output of a report rule: one file, or one per dataset when a path holds ``{dataset}``."""
    name: str                     # the rule's output name (snakemake.output.<name>)
    paths: tuple[str, ...]        # relative to the study's folder
    caption: str | None = None    # report/<study>/<caption>.rst: shown in Snakemake's HTML report with it
    subcategory: str = ""
    label: str = ""               # what the result is, in the report's "result" label; Data files: the file name

    @property
    def per_dataset(self) -> bool:
        return any(DATASET in p for p in self.paths)

    def files(self, datasets: list[str]) -> list[str]:
        """The relative paths, per dataset in ``datasets``' order."""
        if not self.per_dataset:
            return list(self.paths)
        return [p.replace(DATASET, ds) for ds in datasets for p in self.paths]

    def labels(self, dataset: str | None = None) -> dict[str, str]:
        """The labels Snakemake's report shows: a data file by its name, a result by what it is (and its
        dataset: in the label itself where it names one, as the dense figures do, else as a label of its own)."""
        if self.subcategory == "Data":
            return {"file": Path(self.paths[0]).name}
        if dataset is None:
            return {"result": self.label}
        if DATASET in self.label:
            return {"result": self.label.replace(DATASET, dataset)}
        return {"dataset": dataset, "result": self.label}


@dataclass(frozen=True)
class Study:
    """One report: its folder under ``results/report`` and its category in Snakemake's HTML report."""
    name: str
    category: str
    outputs: tuple[Output, ...]

    def output(self, name: str) -> Output:
        return next(o for o in self.outputs if o.name == name)

    def captions(self) -> list[str]:
        return sorted({o.caption for o in self.outputs if o.caption})


def _table(name: str, stem: str, caption: str, subcategory: str, label: str) -> tuple[Output, ...]:
    """A table: its CSV, its Markdown and the page Snakemake's report shows, rendered from the Markdown."""
    return (Output(name, (f"{stem}.csv",)), Output(f"{name}_md", (f"{stem}.md",)),
            Output(f"{name}_page", (f"{stem}.html",), caption, subcategory, label))


def _data(name: str, file: str, caption: str) -> Output:
    return Output(name, (file,), caption, "Data")


PER_DATASET, ACROSS, VERDICT = "Per dataset", "Across datasets", "One verdict"
SHOWN = "Tables and figures"

STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("classification", "Classification · study 1 (strategies)", (
        # per dataset: test scores, their intervals, the relative improvement, the paired differences
        Output("tables", ("tables/{dataset}.csv", "tables/{dataset}.md")),
        Output("table_pages", ("tables/{dataset}.html",), "dataset_table", PER_DATASET, "scores"),
        Output("intervals_md", ("tables/{dataset}_intervals.md",)),
        Output("interval_pages", ("tables/{dataset}_intervals.html",), "intervals", PER_DATASET, "scores: intervals"),
        Output("bars", ("figures/relative_improvement_{dataset}.png",), "relative_improvement_dataset", PER_DATASET,
               "relative improvement"),
        Output("forest", ("figures/forest_{dataset}.png",), "forest", PER_DATASET,
               "relative improvement: forest plot"),
        # across datasets
        *_table("relative", "relative_improvement", "relative_improvement", ACROSS, "relative improvement"),
        Output("figure", ("figures/relative_improvement_all.png",), "relative_improvement_all", ACROSS,
               "relative improvement: heatmap"),
        *_table("best", "best_method", "best_method", ACROSS, "best method per dataset and architecture"),
        *_table("effectiveness", "effectiveness", "effectiveness", ACROSS, "effectiveness per strategy"),
        *_table("table11", "table11", "table11", ACROSS, "Table 11: best method per dataset"),
        *_table("table12", "table12", "table12", ACROSS, "Table 12: effectiveness per architecture"),
        *_table("cost", "cost", "cost", ACROSS, "cost beside quality"),
        *_table("paired", "paired_comparison", "paired_comparison", ACROSS, "paired tests against the reference"),
        # one verdict across datasets (medtl.report.verdict): Friedman, Nemenyi's CD diagram, Bayesian signed-rank
        *_table("verdict_friedman", "verdict_friedman", "verdict_friedman", VERDICT, "Friedman test and average ranks"),
        Output("critical_difference", ("figures/critical_difference.png",), "critical_difference", VERDICT,
               "critical-difference diagram (Nemenyi)"),
        *_table("verdict_bayes", "verdict_bayes", "verdict_bayes", VERDICT,
                "Bayesian signed-rank test against the reference"),
        *_table("verdict_modality", "verdict_modality", "verdict_modality", VERDICT,
                "which strategy for which modality"),
        # the data behind the tables, as downloads
        _data("all_runs", "all_runs.csv", "all_runs"),
        _data("per_lr", "per_lr.csv", "per_lr"),
        _data("selected", "selected.csv", "selected"),
        _data("intervals", "intervals.csv", "intervals_data"),
        Output("summary", ("report.md",)),
    )),
    Study("spft", "Classification · study 2 (SPFT)", (
        *_table("ablation", "ablation", "ablation", SHOWN, "ablation"),
        *_table("topk", "topk", "topk", SHOWN, "top-k layers against all layers"),
        *_table("per_class", "per_class", "per_class", SHOWN, "per-class AUROC"),
        Output("figure", ("figures/per_class_auc.png",), "per_class_auc", SHOWN, "per-class AUROC: figure"),
        Output("side_by_side_md", ("side_by_side.md",)),
        Output("side_by_side_page", ("side_by_side.html",), "side_by_side", SHOWN, "published numbers side by side"),
        _data("side_by_side", "side_by_side.csv", "side_by_side_data"),
        _data("runs", "runs.csv", "runs"),
        Output("summary", ("report.md",)),
    )),
    Study("published", "Classification · published numbers", (
        Output("summary", ("side_by_side.md",)),
        Output("page", ("side_by_side.html",), "side_by_side", "Side by side",
               "our results next to the published ones, and the recounts"),
        _data("side_by_side", "side_by_side.csv", "side_by_side_data"),
        _data("recount_table11", "recount_table11.csv", "recount"),
        _data("recount_table12", "recount_table12.csv", "recount"),
    )),
    Study("detection", "Detection · study 2 (SPFT)", (
        Output("table", ("detection_table.md",)),
        Output("table_csv", ("detection_table.csv",)),
        Output("table_page", ("detection_table.html",), "detection_table", SHOWN, "scores"),
        Output("per_class", ("per_class.md",)),
        Output("per_class_csv", ("per_class.csv",)),
        Output("per_class_page", ("per_class.html",), "per_class", SHOWN, "scores per class"),
        Output("figures", ("figures/boxes_{dataset}.png",), "boxes", SHOWN, "test images with boxes: {dataset}"),
        _data("summary", "summary.csv", "summary"),
        _data("all_runs", "all_runs.csv", "all_runs"),
        Output("report", ("report.md",)),
    )),
    Study("segmentation", "Segmentation · study 2 (SPFT)", (
        Output("table", ("segmentation_table.md",)),
        Output("table_csv", ("segmentation_table.csv",)),
        Output("table_page", ("segmentation_table.html",), "segmentation_table", SHOWN, "Dice"),
        Output("figures", ("figures/masks_{dataset}.png",), "masks", SHOWN, "test images with masks: {dataset}"),
        _data("summary", "summary.csv", "summary"),
        _data("all_runs", "all_runs.csv", "all_runs"),
        Output("per_image", ("per_image.csv",)),  # every (job, image, structure): too long for the report
        Output("report", ("report.md",)),
    )),
)}


class ReportFiles:
    """Where a report writer puts each file: the path its rule names for it.

    ``ReportFiles.from_output(study, snakemake.output)`` inside the workflow; ``ReportFiles.under(study,
    folder)`` outside it (tests, a notebook), every declared file under ``folder``. Either way a file the study
    does not declare is refused (``ValueError`` naming it) before anything is written."""

    def __init__(self, study: str, paths: dict[str, str] | None = None, folder: str | Path | None = None):
        self.study = STUDIES[study]
        self._paths = dict(paths or {})
        self._folder = None if folder is None else Path(folder)
        patterns = [re.escape(p).replace(re.escape(DATASET), r"[^/]+") for o in self.study.outputs for p in o.paths]
        self._declared = re.compile("|".join(f"(?:{p})" for p in patterns))
        self.written: dict[str, str] = {}

    @classmethod
    def from_output(cls, study: str, output) -> "ReportFiles":
        """The paths of a report rule's ``output`` (Snakemake's named list), by their name in the study."""
        paths = {}
        for out in STUDIES[study].outputs:
            files = output[out.name] if out.name in output.keys() else None
            if files is None:
                raise ValueError(f"the {study} report's rule has no output '{out.name}' "
                                 f"(declared in medtl/report/outputs.py)")
            for file in [files] if isinstance(files, str) else list(files):
                rel = _relative(str(file), out)
                if rel is None:
                    raise ValueError(f"output '{out.name}' of the {study} report's rule is {file}, which ends in "
                                     f"none of {list(out.paths)}")
                paths[rel] = str(file)
        return cls(study, paths)

    @classmethod
    def under(cls, study: str, folder: str | Path) -> "ReportFiles":
        return cls(study, folder=folder)

    def __call__(self, rel: str) -> Path:
        """The path to write the declared file ``rel`` (relative to the study's folder) to."""
        if self._folder is not None:
            if not self._declared.fullmatch(rel):
                raise ValueError(self._undeclared(rel))
            path = self._folder / rel
        elif rel in self._paths:
            path = Path(self._paths[rel])
        else:
            raise ValueError(self._undeclared(rel))
        self.written[rel] = str(path)
        return path

    def _undeclared(self, rel: str) -> str:
        return (f"the {self.study.name} report writes '{rel}', which its rule does not declare: add it to "
                f"STUDIES['{self.study.name}'] in medtl/report/outputs.py (or stop writing it)")

    def check_written(self) -> None:
        """Every file the rule declares was written (inside the workflow); ``RuntimeError`` naming the others."""
        unwritten = [rel for rel, path in self._paths.items() if not Path(path).exists()]
        if unwritten:
            raise RuntimeError(f"the {self.study.name} report declares {len(unwritten)} file(s) it did not write: "
                               f"{', '.join(sorted(unwritten))}")


def _relative(path: str, output: Output) -> str | None:
    """The declared relative path ``path`` ends in, its dataset filled in."""
    for template in output.paths:
        pattern = re.escape(template).replace(re.escape(DATASET), r"[^/]+")
        m = re.search(rf"(?:^|/)({pattern})$", path)
        if m:
            return m.group(1)
    return None



def report_files(study: str, out: "str | Path | ReportFiles") -> ReportFiles:
    """A writer's destination: the rule's files as they are, or a folder (outside the workflow)."""
    return out if isinstance(out, ReportFiles) else ReportFiles.under(study, out)
