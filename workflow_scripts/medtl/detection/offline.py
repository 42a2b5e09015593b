"""Run Ultralytics offline, quietly and within the job's threads.

Ultralytics reaches for the network in three places a training job can hit: weights named
by a ``.pt`` model (never used here: models come from YAML or a local checkpoint), the AMP
check (it downloads a model to compare fp16 with fp32; it returns early on CPU and is never
reached on GPU either, because AMP runs as bf16, which skips it) and fonts (``check_font``,
called by every dataset check, downloads Arial.ttf when it is not in the config folder).
:func:`prepare` closes the last one and the rest of the environment; call it before the
first ``import ultralytics`` of the process.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from medtl.io import atomic_path

FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def provide_fonts(folder: Path) -> None:
    """Put matplotlib's own DejaVu Sans where Ultralytics looks for Arial: with the file present it
    never downloads one, and any label it might draw still renders."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FONTS:
        target = folder / name
        if not target.exists():
            with atomic_path(target) as tmp:  # concurrent jobs may race here; each rename is whole
                shutil.copyfile(source, tmp)


def prepare(config_dir: str | os.PathLike, threads: int = 1) -> None:
    """Offline mode, a settings folder inside the results (not the user's home), fonts, threads."""
    os.environ["YOLO_OFFLINE"] = "1"  # no connectivity probes, no hub, no analytics
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(config_dir).resolve()))
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))
    from ultralytics import utils as uutils
    from ultralytics.utils import torch_utils

    provide_fonts(Path(uutils.USER_CONFIG_DIR))  # the folder Ultralytics settled on at import
    # select_device() resets torch's thread count to this module constant (cores - 1); a job must
    # stay within the threads the scheduler gave it
    torch_utils.NUM_THREADS = max(1, threads)
    import torch

    torch.set_num_threads(max(1, threads))


def device_arg(name: str) -> str:
    """The config's device ("auto", "cpu", "cuda", "cuda:1") in Ultralytics' spelling ("cpu", "0", "1")."""
    import torch

    if name == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' requested but CUDA is not available; set device: auto or cpu")
    return name.split(":", 1)[1] if ":" in name else "0"
