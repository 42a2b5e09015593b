"""An architecture's ``weights`` entry, and a detection or segmentation model's, declared per weights type
as every strategy's settings are: what each type takes, its default and meaning in one place. The JSON schema
checks the entry's types when the workflow is parsed; these declarations give the defaults the jobs use,
refuse a setting the type does not take (``epochs`` under ``imagenet`` would otherwise be ignored without a
word), and build the entry's part of the cache keys of the weights job and of every training job that starts
from it (``medtl.workflow.plan``, ``medtl.workflow.dense_plan``). Nothing here imports PyTorch: the planner reads it.

The settings the pipeline's pretraining takes were read with ``.get(key, default)`` before they were
declared, and jobs were keyed on the entry as written; each declares that default as its ``neutral`` value,
and the key holds what the entry writes, so every entry keeps its key (a finished pretraining is not rerun)."""
from __future__ import annotations

from medtl.settings import REQUIRED, Int, Number, Settings, Text

#: weights type -> the settings of an entry of that type (besides ``type``)
WEIGHTS: dict[str, Settings] = {
    "none": Settings(),
    "imagenet": Settings(),
    "pretrain": Settings(
        dataset=Text(REQUIRED, doc="the key of source_datasets the architecture is pretrained on"),
        epochs=Int(5, minimum=1, neutral=5, doc="pretraining epochs (full fine-tuning from random weights)"),
        lr=Number(1e-3, above=0, neutral=1e-3, doc="pretraining learning rate"),
        batch_size=Int(64, minimum=1, neutral=64, doc="pretraining batch size"),
        seed=Int(0, minimum=0, maximum=4294967295, neutral=0, doc="seed of the pretraining run"),
    ),
    "checkpoint": Settings(
        path=Text(REQUIRED, doc="a state dict file (or {'state_dict': ...}), read once into the results folder"),
    ),
    "hub": Settings(
        repo=Text(None, nullable=True, neutral=None,
                  doc="a Hugging Face model repository; null: the architecture's (rad_dino: microsoft/rad-dino)"),
        revision=Text(None, nullable=True, neutral=None, doc="a branch, tag or commit of repo; null: main"),
        path=Text(None, nullable=True, neutral=None,
                  doc="a local copy of the repository (git clone or snapshot folder): no download"),
    ),
}

#: a detection or segmentation model's ``weights`` entry (``detection.models.<name>.weights``, ...)
DENSE_WEIGHTS: dict[str, Settings] = {
    "none": Settings(),
    "pretrain": Settings(
        dataset=Text(REQUIRED, doc="the key of the task's source_datasets the model is pretrained on"),
        epochs=Int(5, minimum=1, neutral=5, doc="pretraining epochs (every part from random weights)"),
        lr=Number(None, nullable=True, above=0, neutral=None,
                  doc="pretraining learning rate; null: the task's training lr0 (detection) or lr (segmentation)"),
        batch_size=Int(None, nullable=True, minimum=1, neutral=None,
                       doc="pretraining batch size; null: the task's training batch_size"),
        seed=Int(0, minimum=0, maximum=4294967295, neutral=0, doc="seed of the pretraining run"),
    ),
    "release": Settings(
        url=Text(None, nullable=True, neutral=None,
                 doc="where to fetch it; null: the official address of the model's released checkpoint"),
        sha256=Text(None, nullable=True, neutral=None, pattern=r"[0-9a-fA-F]{64}",
                    meaning="64 hexadecimal digits", doc="the file's SHA-256, checked after the download"),
    ),
    "checkpoint": Settings(
        path=Text(REQUIRED, doc="a weights file in the model's own format (never downloaded)"),
    ),
}

NO_WEIGHTS = {"type": "none"}


def _declaration(entry: dict, where: str, table: dict[str, Settings] = WEIGHTS) -> Settings:
    kind = entry.get("type")
    if kind not in table:
        raise ValueError(f"{where}.type: {kind!r} is not a weights type (one of: {', '.join(table)})")
    return table[kind]


def weights_problems(entry: dict | None, where: str, table: dict[str, Settings] = WEIGHTS) -> list[str]:
    """Every problem of a ``weights`` entry (``table``: an architecture's, :data:`WEIGHTS`, or a dense model's,
    :data:`DENSE_WEIGHTS`), one line each, naming the key path."""
    entry = entry or NO_WEIGHTS
    try:
        declared = _declaration(entry, where, table)
    except ValueError as err:
        return [str(err)]
    # a setting of another type (epochs under imagenet) would be ignored: say which type takes it
    elsewhere = {k: [t for t, s in table.items() if k in s.declared] for k in entry
                 if k != "type" and k not in declared.declared}
    problems = [f"{where}.{k}: not a setting of weights type '{entry['type']}' (only of {', '.join(types)}); "
                f"remove it, or change the type" for k, types in elsewhere.items() if types]
    return problems + declared.problems(entry, f"{where} (type {entry['type']})",
                                        ignore=("type", *(k for k, types in elsewhere.items() if types)))


def resolve_weights(entry: dict | None, where: str = "weights", table: dict[str, Settings] = WEIGHTS) -> dict:
    """The entry with its type's defaults filled in; ValueError naming every problem."""
    entry = entry or NO_WEIGHTS
    return {"type": entry["type"], **_declaration(entry, where, table).resolve(entry, where, ignore=("type",))}


def weights_key(resolved: dict, written: dict | None = None, table: dict[str, Settings] = WEIGHTS) -> dict:
    """What of a resolved entry goes into the cache keys (:meth:`medtl.settings.Settings.key`; ``written``: the
    entry as the config writes it, whose values stay in the key as they always were)."""
    return {"type": resolved["type"], **_declaration(resolved, "weights", table).key(
        {k: v for k, v in resolved.items() if k != "type"}, written)}


def weights_settings(keyed: dict, table: dict[str, Settings] = WEIGHTS) -> dict:
    """The resolved entry a cache key stands for (what a weights job uses). Idempotent."""
    return {"type": keyed["type"], **_declaration(keyed, "weights", table).unkey(
        {k: v for k, v in keyed.items() if k != "type"})}
