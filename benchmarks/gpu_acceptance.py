"""GPU acceptance: the GPU path end to end in one run, one table (issue 18).

Stages (configs/gpu_acceptance.yaml; each a Snakemake run of its own in <out>/<stage>/, or a script):

- classification: every strategy x ResNet-50, DenseNet-121, VGG-19 and a timm ViT-B/16 at 224 px on a real
  dataset (brain MRI from ../shared/data), one seed, two epochs, bf16 + channels_last; every job's
  metrics.json and the reports (classification, SPFT, published side by side);
- classification_compile: ResNet-50 FT with torch.compile too;
- spft_rad_dino: SPFT on RAD-DINO's ViT-B/14 at its real size (random weights, 518 px) for a few steps;
- detection: YOLOv8n and RT-DETR-l on the NIH ChestX-ray14 boxes; segmentation: SAM ViT-B and SAM 2.1 tiny
  on the COVID CXR heart and lung masks; FT and SPFT, a few steps each, with their reports;
- throughput: benchmarks/gpu_throughput.py (training images/s and share of the bf16 peak of the three CNNs).

Every weight is random ({type: none}): nothing is downloaded. A stage passes when its command exits 0
within its time, every training job it planned wrote its metrics.json (on the GPU, when run on one), and
every report it planned was written. At the end it prints one Markdown table (stage | what | jobs | status |
wall s | key metric) with the device and the commit, writes it to <out>/table.md (and <out>/summary.json),
and exits 1 naming the stages that failed.

    bash benchmarks/gpu_acceptance.sh                  # the GPU run (sets up Python if needed)
    python benchmarks/gpu_acceptance.py --smoke        # the same stages at smoke size (CPU, ~3 min)
    python benchmarks/gpu_acceptance.py --stages detection,throughput --out /tmp/acc
    python benchmarks/gpu_acceptance.py --pack-data shared/data    # copy just the data the run reads
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"gpu": REPO / "configs" / "gpu_acceptance.yaml", "smoke": REPO / "configs" / "gpu_acceptance_smoke.yaml"}
DATA_PREFIX = "../shared/data"
#: where training jobs write their metrics.json, per training rule
RUNS = {"train": "results/runs/*/*/*/*/*/metrics.json",
        "train_detection": "results/detection/runs/*/*/*/*/metrics.json",
        "train_segmentation": "results/segmentation/runs/*/*/*/*/metrics.json"}
#: the folder each report rule writes
REPORTS = {"report_classification": "classification", "report_spft": "spft", "report_published": "published",
           "report_detection": "detection", "report_segmentation": "segmentation"}


def log(msg: str) -> None:
    print(f"[acceptance] {msg}", file=sys.stderr, flush=True)


def default_data() -> Path:
    """$MEDTL_DATA, else shared/data inside the checkout (what the device tool carries), else ../shared/data."""
    if os.environ.get("MEDTL_DATA"):
        return Path(os.environ["MEDTL_DATA"])
    inside = REPO / "shared" / "data"
    return inside if inside.is_dir() else (REPO / DATA_PREFIX).resolve()


def with_data(obj, data: Path):
    """``obj`` with every string starting ../shared/data pointing into ``data`` instead (absolute)."""
    if isinstance(obj, dict):
        return {k: with_data(v, data) for k, v in obj.items()}
    if isinstance(obj, list):
        return [with_data(v, data) for v in obj]
    if isinstance(obj, str) and obj.startswith(DATA_PREFIX):
        return str(data) + obj[len(DATA_PREFIX):]
    return obj


def commit() -> str:
    if os.environ.get("MEDTL_COMMIT"):
        return os.environ["MEDTL_COMMIT"]
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git checkout)"


# -- one stage ------------------------------------------------------------------------------------------
class Stage:
    def __init__(self, name: str, spec: dict, out: Path, data: Path, env: dict, cuda: bool, dry_run: bool = False):
        self.name, self.spec, self.cuda, self.env, self.dry_run = name, spec, cuda, env, dry_run
        self.dir = out / name
        self.log = self.dir / ("snakemake.log" if "config" in spec else "output.log")
        self.data = data
        self.proc: subprocess.Popen | None = None
        self.t0 = self.wall = None
        self.timeout = float(spec.get("timeout_s", 300))
        self.status, self.jobs, self.metric, self.problems = "not run", "", "", []

    def command(self) -> list[str]:
        if "config" in self.spec:
            config = {"results": "results", **{k: v for k, v in with_data(self.spec["config"], self.data).items()
                                               if k != "results"}}
            (self.dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                   "--directory", str(self.dir), "--configfile", str(self.dir / "config.yaml"),
                   "--cores", str(self.spec.get("cores", 2)), "--show-failed-logs"]
            if self.spec.get("gpus"):
                cmd += ["--resources", f"gpu={self.spec['gpus']}"]
            return cmd + (["--dry-run"] if self.dry_run else [])
        command = [str(c) for c in self.spec["command"]]
        if command[0].endswith(".py"):
            command = [sys.executable, str(REPO / command[0]), *command[1:]]
        return command[:2] + ["--help"] if self.dry_run else command

    def start(self, timeout: float) -> None:
        self.timeout = min(self.timeout, timeout)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        cmd = self.command()
        log(f"{self.name}: started (limit {self.timeout:.0f} s), log {self.log}")
        self.t0 = time.monotonic()
        with open(self.log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)

    def poll(self) -> bool:
        """True once the stage has finished (or was stopped at its time limit)."""
        if self.proc is None:
            return True
        rc = self.proc.poll()
        elapsed = time.monotonic() - self.t0
        if rc is None and elapsed <= self.timeout:
            return False
        if rc is None:
            self.stop()
            self.finish(None)
        else:
            self.finish(rc)
        return True

    def stop(self) -> None:
        """The stage's whole process group: SIGTERM (Snakemake stops its jobs), then SIGKILL."""
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue

    def finish(self, rc: int | None) -> None:
        self.wall = time.monotonic() - self.t0
        self.proc = None
        text = self.log.read_text(errors="replace")
        try:
            if self.dry_run:  # planned, not run: what it would run
                stats = job_stats(text)
                self.jobs = f"{stats.get('total', 0)} planned" if "config" in self.spec else ""
                self.metric = ", ".join(f"{k} {v}" for k, v in stats.items() if k != "total")
            elif "config" in self.spec:
                self.check_snakemake(text)
            else:
                self.check_command(text)
        except Exception as err:  # a check that breaks is a failure of the stage, not of the script
            self.problems.append(f"check failed: {type(err).__name__}: {err}")
        if rc is None:
            self.status = f"FAILED (timeout after {self.timeout:.0f} s)"
        elif rc != 0:
            self.status = f"FAILED (exit {rc})"
        elif self.problems:
            self.status = "FAILED (" + "; ".join(self.problems) + ")"
        else:
            self.status = "ok"
        log(f"{self.name}: {self.status} in {self.wall:.0f} s")

    # -- checks and key metrics ---------------------------------------------------------------------------
    def check_snakemake(self, text: str) -> None:
        planned = job_stats(text)
        steps = re.findall(r"(\d+) of (\d+) steps", text)
        done, total = (int(steps[-1][0]), int(steps[-1][1])) if steps else (0, planned.get("total", 0))
        runs = {rule: sorted(self.dir.glob(pattern)) for rule, pattern in RUNS.items()}
        n_runs = sum(len(v) for v in runs.values())
        self.jobs = f"{done}/{total} ({n_runs} run{'s' * (n_runs != 1)})" if total else "0/0"
        if not total:
            self.problems.append("no job planned")
        for rule in RUNS:
            if planned.get(rule, 0) != len(runs[rule]):
                self.problems.append(f"{rule}: {len(runs[rule])} of {planned.get(rule, 0)} metrics.json")
        for rule, folder in REPORTS.items():
            report = self.dir / "results" / "report" / folder
            if planned.get(rule) and not (report.is_dir() and any(report.iterdir())):
                self.problems.append(f"{rule}: no results/report/{folder}/")
        metrics = [json.loads(p.read_text()) for v in runs.values() for p in v]
        if self.cuda:
            off = [m for m in metrics if not str(m.get("device", "")).startswith("cuda")]
            if off:
                self.problems.append(f"{len(off)} run(s) not on the GPU")
        self.metric = key_metric(metrics)

    def check_command(self, text: str) -> None:
        rows = re.findall(r"^\s+(\S+)\s+(.+?)\s+([\d.]+) images/s.*?(?:([\d.]+) % of peak)?$", text, re.M)
        self.jobs = f"{len(rows)} measured"
        if not rows:
            self.problems.append("no images/s printed")
        best = {}
        for arch, variant, rate, peak in rows:
            if arch not in best or float(rate) > best[arch][0]:
                best[arch] = (float(rate), variant, peak)
        self.metric = "; ".join(f"{arch} {rate:,.0f} img/s" + (f" ({peak} % of bf16 peak)" if peak else "")
                                + (f" [{variant}]" if len({row[1] for row in rows}) > 1 else "")
                                for arch, (rate, variant, peak) in best.items())
        ratios = re.findall(r"RATIO (\S+) (.+?) / fp32 = ([\d.]+)x", text)
        if ratios:
            self.metric += "; x fp32: " + ", ".join(f"{a} {r}" for a, _, r in ratios)


def job_stats(text: str) -> dict[str, int]:
    """The counts of Snakemake's first "Job stats" table (what it planned to run)."""
    stats: dict[str, int] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 3:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                stats[parts[0]] = int(parts[1])
            break
    return stats


def first_error(text: str) -> str:
    """The first line of a log that says what went wrong (and the next ones while they end in a colon)."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if re.search(r"\b(\w*Error|Exception|Traceback|Killed)\b", line) and not line.startswith("$ "):
            out = line
            for following in lines[i + 1:i + 4]:  # a message that goes on after a colon
                if not out.endswith(":"):
                    break
                out += " " + following
            return out
    return ""


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def key_metric(metrics: list[dict]) -> str:
    """The primary test metric of the runs: per model and strategy where there are a few, else a range."""
    if not metrics:
        return ""
    dense = "model" in metrics[0]
    name = {"map50_95": "mAP50-95"}.get(metrics[0].get("primary_metric"), metrics[0].get("primary_metric", ""))
    if dense:  # detection: mAP@50 is the number people quote; segmentation: mean Dice
        name = "mAP50" if metrics[0].get("task") == "detection" else "Dice"
        key = "map50" if name == "mAP50" else "dice"
        cells = sorted((m["model"], m["strategy"], (m.get("test") or {}).get(key)) for m in metrics)
        return f"test {name}: " + ", ".join(f"{mo} {st} {fmt(v)}" for mo, st, v in cells)
    values = [(m.get("test") or {}).get(m.get("primary_metric")) for m in metrics]
    known = [v for v in values if v is not None]
    label = f"test {name.upper() if name in ('auroc', 'map') else name}"
    if len(metrics) == 1:
        return f"{label} {fmt(values[0])} ({metrics[0]['arch']} {metrics[0]['strategy']})"
    if not known:
        return f"{label}: undefined in every run"
    return (f"{label} mean {sum(known) / len(known):.3f} (min {min(known):.3f}, max {max(known):.3f}, "
            f"{len(known)} runs)")


# -- the run ----------------------------------------------------------------------------------------------
def table(stages: list[Stage]) -> str:
    rows = ["| stage | what | jobs | status | wall s | key metric |", "|---|---|---|---|---:|---|"]
    for s in stages:
        wall = f"{s.wall:.0f}" if s.wall is not None else ""
        cells = [s.name, s.spec.get("what", ""), s.jobs, s.status, wall, s.metric]
        rows.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def pack_data(config: dict, data: Path, dest: Path) -> None:
    """Copy into ``dest`` only the files the config's datasets read (layout kept): the device tool carries
    a shared/ folder inside the checkout, up to 64 MiB with the code."""
    import pandas as pd

    sys.path.insert(0, str(REPO / "workflow_scripts"))
    from medtl.data.dense_adapters import _subset

    def copy(src: Path):
        target = dest / src.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)

    seen = set()
    for spec in config["stages"].values():
        cfg = spec.get("config", {})
        entries = list(cfg.get("datasets", {}).values())
        for task in ("detection", "segmentation"):
            entries += list(cfg.get(task, {}).get("datasets", {}).values())
        for entry in entries:
            options = entry.get("options", {})
            root = str(options.get("root", ""))
            if not root.startswith(DATA_PREFIX) or (root, json.dumps(options, sort_keys=True)) in seen:
                continue
            seen.add((root, json.dumps(options, sort_keys=True)))
            root = data / root[len(DATA_PREFIX):].lstrip("/")
            kind = entry.get("type")
            if kind == "csv_table":
                table = pd.read_csv(root / options.get("csv", "labels.csv"), dtype=str, keep_default_na=False)
                copy(root / options.get("csv", "labels.csv"))
                for p in table[options.get("path_column", "path")]:
                    copy(root / p)
            elif kind == "mask_folder" and options.get("index"):
                # the rows `limit` keeps, and a trimmed index: the same limit then keeps all of them
                index = pd.read_csv(root / options["index"], dtype=str, keep_default_na=False)
                index = index.iloc[_subset(list(index[options.get("image_column", "image")]), options.get("limit"))]
                (dest / root.relative_to(data) / options["index"]).parent.mkdir(parents=True, exist_ok=True)
                index.to_csv(dest / root.relative_to(data) / options["index"], index=False)
                for value in index.to_numpy().ravel():
                    if isinstance(value, str) and value and (root / value).is_file():
                        copy(root / value)
            elif kind is None and "nih_cxr14_bbox" in str(root):
                for name in ("BBox_List_2017.csv", "classes.txt"):
                    copy(root / name)
                copy(root / options.get("images", "."))
            else:
                copy(root)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"copied the data of {config_name(config)} to {dest}: {size / 2**20:.1f} MiB")


def config_name(config: dict) -> str:
    return ", ".join(config["stages"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--smoke", action="store_true",
                    help="the same stages at smoke size (configs/gpu_acceptance_smoke.yaml); the default without a GPU")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="cuda where torch sees a GPU (default), else cpu; cpu hides the GPU from every job "
                         "and, without --config, implies --smoke")
    ap.add_argument("--config", type=Path, help="another acceptance config (default: by --smoke)")
    ap.add_argument("--stages", help="comma-separated subset of the config's stages, in its order")
    ap.add_argument("--out", type=Path, help="results folder (default results/gpu_acceptance[_smoke]; "
                                             "each stage's folder in it is emptied first)")
    ap.add_argument("--data", type=Path, default=None,
                    help="folder holding the real data sets (default: $MEDTL_DATA, shared/data, ../shared/data)")
    ap.add_argument("--dry-run", action="store_true",
                    help="plan every stage (snakemake --dry-run: the configs are checked, nothing runs)")
    ap.add_argument("--pack-data", type=Path, metavar="DEST",
                    help="copy only the data files the config reads to DEST (e.g. shared/data) and exit")
    args = ap.parse_args(argv)

    import torch

    cuda_available = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda_available else "cpu")
    if device == "cuda" and not cuda_available:
        ap.error("--device cuda, but torch sees no GPU")
    smoke = args.smoke or (device == "cpu" and not args.config)
    if device == "cpu" and not args.smoke and not args.config:
        log("no GPU: running the smoke configuration on the CPU (--smoke)")
    config_path = args.config or CONFIGS["smoke" if smoke else "gpu"]
    config = yaml.safe_load(config_path.read_text())
    data = (args.data or default_data()).resolve()
    if args.pack_data:
        pack_data(config, data, args.pack_data.resolve())
        return 0
    out = (args.out or REPO / "results" / ("gpu_acceptance_smoke" if smoke else "gpu_acceptance")).resolve()
    names = list(config["stages"])
    if args.stages:
        wanted = args.stages.split(",")
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"unknown stage(s) {unknown}; the config has {names}")
        names = [n for n in names if n in wanted]
    if not data.is_dir():
        log(f"data folder {data} is absent: set --data or MEDTL_DATA")

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:  # several jobs share the GPU: less memory held back by each process's allocator
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    cuda = device == "cuda"
    out.mkdir(parents=True, exist_ok=True)
    stages = [Stage(n, config["stages"][n], out, data, env, cuda, args.dry_run) for n in names]
    budget = float(config.get("budget_s", 480))
    t0 = time.monotonic()
    name = torch.cuda.get_device_name(0) if cuda else ("CPU (smoke)" if smoke else "CPU")
    log(f"{config_path.relative_to(REPO) if config_path.is_relative_to(REPO) else config_path} on {name}, "
        f"data {data}, results {out}, budget {budget:.0f} s")

    def left() -> float:
        return budget - (time.monotonic() - t0)

    def run(group: list[Stage]) -> None:
        for s in group:
            if left() < 10:
                s.status = "FAILED (not started: time budget spent)"
                continue
            s.start(left())
            if not config.get("concurrent"):
                while not s.poll():
                    time.sleep(0.5)
        while not all([s.poll() for s in group]):  # a list: every stage's time limit is checked
            time.sleep(0.5)

    try:
        if config.get("concurrent"):  # the Snakemake stages side by side, then each script alone
            run([s for s in stages if "config" in s.spec])
            for s in stages:
                if "config" not in s.spec:
                    run([s])
        else:
            run(stages)
    except KeyboardInterrupt:
        for s in stages:
            if s.proc is not None:
                s.stop()
                s.finish(None)
                s.status = "FAILED (interrupted)"
    total = time.monotonic() - t0

    failed = [s for s in stages if s.status != "ok"]
    lines = [f"## GPU acceptance{' (smoke)' if smoke else ''}{' (dry run)' if args.dry_run else ''}", "",
             f"device: {name}; torch {torch.__version__}; commit {commit()}; "
             f"config {config_path.name}; total {total:.0f} s (budget {budget:.0f} s)", "",
             table(stages), ""]
    if failed:
        lines.append("FAILED: " + ", ".join(s.name for s in failed))
        for s in failed:
            error = first_error(s.log.read_text(errors="replace")) if s.log.exists() else ""
            lines.append(f"  {s.name}: {s.status}; log {s.log}")
            if error:
                lines.append(f"    first error: {error[:300]}")
    else:
        lines.append(f"all {len(stages)} stages ok")
    report = "\n".join(lines)
    for s in failed:  # the end of each failed stage's log, where the error is
        if s.log.exists():
            tail = s.log.read_text(errors="replace").splitlines()[-25:]
            print(f"--- {s.name}: last lines of {s.log}\n" + "\n".join(tail), file=sys.stderr)
    print(report, flush=True)
    (out / "table.md").write_text(report + "\n")
    (out / "summary.json").write_text(json.dumps({
        "device": name, "torch": torch.__version__, "commit": commit(), "config": str(config_path),
        "total_s": total, "ok": not failed,
        "stages": [{"stage": s.name, "what": s.spec.get("what", ""), "jobs": s.jobs, "status": s.status,
                    "wall_s": s.wall, "key_metric": s.metric} for s in stages]}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
