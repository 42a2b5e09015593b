"""The config check, when the workflow is parsed, so a bad config stops before any job starts:
:func:`validate_config` checks it against the JSON schema (schemas/config.schema.yaml: types, ranges,
known keys) and fills in the schema's defaults; :func:`check_config` makes the checks a schema cannot:
names against the registries, settings against each strategy's and dataset source's declaration (type,
range, known keys), and references between sections. Both read only declarations, never PyTorch, so
that planning stays light. Each problem is one line naming the key path, the value and what is allowed;
the first one is on the error's first line.
"""
from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path


class ConfigError(ValueError):
    pass


def config_error(problems: list[str]) -> ConfigError:
    """One error for every problem found, the first on its first line."""
    return ConfigError("invalid config: " + "\n  ".join(problems))


def check_writable(results: str | Path) -> None:
    """Before the first job: the results folder and each folder in it take a new file. Snakemake removes a job's
    old outputs before it runs the job and stops with a long traceback of its own when a folder refuses; this
    says which folder and why in one line instead. (Run when jobs are about to start, never on a dry run.)"""
    import errno
    import os
    import tempfile

    from medtl.io import REFUSED

    root = Path(results)
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())] if root.is_dir() else []
    for folder in folders:
        try:
            fd, probe = tempfile.mkstemp(prefix=".write_check.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            if err.errno not in REFUSED or err.errno in (errno.ENOSPC, errno.EDQUOT):
                continue  # a full disk is named by the job that meets it, with the space left
            raise ConfigError(f"results: cannot write in {folder}: {REFUSED[err.errno]}, so no job can write its "
                              f"outputs there (see ls -ld {folder}; make it writable, or set results: in the config "
                              "to a writable folder)") from None


# -- the JSON schema ----------------------------------------------------------------------------------
_WORDS = {"integer": ("an integer", "integers"), "number": ("a number", "numbers"), "string": ("a string", "strings"),
          "boolean": ("true or false", "true or false"), "array": ("a list", "lists"),
          "object": ("a mapping", "mappings"), "null": ("null", "null")}


def validate_config(config: dict, schema_file: str | Path) -> None:
    """Check ``config`` against the JSON schema and fill in its defaults (as Snakemake's ``validate`` with
    ``set_default=True`` does). A problem stops it with a :class:`ConfigError` that names, per problem, the
    key path and what is wrong in one line (an unknown key: the closest known one and the keys allowed
    there), not the schema."""
    import yaml
    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load(Path(schema_file).read_text())
    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    Validator = validators.extend(Draft202012Validator, {"properties": properties_with_defaults})
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems = [line for error in errors for line in _schema_problems(error)]
    if problems:
        raise config_error(problems)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_problems(error) -> list[str]:
    from medtl.settings import show

    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in known:
                continue
            close = difflib.get_close_matches(str(key), known, n=1)
            out.append(f"{f'{where}.{key}' if where else key}: unknown {'key' if where else 'top-level key'}"
                       f"{f' (did you mean {close[0]!r}?)' if close else ''} (known: {', '.join(known) or 'none'})")
        return out
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [f"{f'{where}.{k}' if where else k}: required" for k in missing]
    expected = _describe(error.schema)
    default = f" (default {show(error.schema['default'])})" if "default" in error.schema else ""
    if expected:
        return [f"{where or 'the config'}: {show(error.instance)} is not allowed; expected {expected}{default}"]
    return [f"{where or 'the config'}: {error.message}"]


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _describe(schema: dict, plural: bool = False) -> str:
    """What a schema allows, in words: 'an integer >= 0', 'a list of numbers > 0 (at least 1, each once)'."""
    from medtl.settings import show

    if "enum" in schema:
        return "one of " + ", ".join(show(v) for v in schema["enum"])
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    if not kinds:
        return ""
    text = " or ".join(_WORDS.get(k, (k, k))[plural] for k in kinds)
    bounds = [f"{sign} {_number(schema[key])}" for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                          ("maximum", "<="), ("exclusiveMaximum", "<"))
              if key in schema]
    if bounds:
        text += " " + " and ".join(bounds)
    if "multipleOf" in schema:
        text += f", a multiple of {_number(schema['multipleOf'])}"
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    if "array" in kinds and isinstance(schema.get("items"), dict):
        items = _describe(schema["items"], plural=True)
        text = text.replace(_WORDS["array"][plural], f"{_WORDS['array'][plural]} of {items}", 1) if items else text
    counts = [f"at least {schema['minItems']}" if "minItems" in schema else "",
              f"at most {schema['maxItems']}" if "maxItems" in schema else "",
              "each once" if schema.get("uniqueItems") else "",
              f"at least {schema['minProperties']} entr{'y' if schema['minProperties'] == 1 else 'ies'}"
              if "minProperties" in schema else ""]
    counts = [c for c in counts if c]
    return text + (f" ({', '.join(counts)})" if counts else "")


#: keys of a strategy entry that select jobs rather than set the strategy
SELECTION_KEYS = ("type", "learning_rates", "architectures")


def canonical(obj) -> str:
    """One stable text per value: what Snakemake compares to decide whether params changed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def check_config(config: dict) -> None:
    from medtl.data import DATASETS
    from medtl.data.options import declared_options
    from medtl.models.spec import ARCHS
    from medtl.models.weights_declaration import weights_problems
    from medtl.strategies import STRATEGIES

    errors: list[str] = []
    if not (config.get("datasets") or config.get("detection") or config.get("segmentation")):
        raise ConfigError("invalid config: it has no task: give classification datasets (with architectures, "
                          "strategies and learning_rates), a detection section or a segmentation section")
    if config.get("datasets"):
        missing = [k for k in ("architectures", "strategies", "learning_rates") if not config.get(k)]
        if missing:
            raise ConfigError(f"invalid config: classification datasets ({', '.join(config['datasets'])}) need "
                              f"{', '.join(missing)}: add {'them' if len(missing) > 1 else 'it'}, or remove "
                              "datasets for a detection or segmentation study only")
    for section in ("datasets", "source_datasets"):
        for key, entry in config.get(section, {}).items():
            kind = (entry or {}).get("type", key)
            if kind not in DATASETS:
                errors.append(f"{section}.{key}: unknown dataset '{kind}' (set 'type' to one of: "
                              f"{', '.join(DATASETS.names())})")
                continue
            errors += declared_options(DATASETS.get(kind).options).problems(
                (entry or {}).get("options"), f"{section}.{key}.options")
    for key, entry in config["architectures"].items():
        kind = (entry or {}).get("type", key)
        if kind not in ARCHS:
            errors.append(f"architectures.{key}: {ARCHS.why_unknown(kind)}")
            continue
        spec = ARCHS.get(kind)
        weights = (entry or {}).get("weights", {"type": "none"})
        errors += weights_problems(weights, f"architectures.{key}.weights")
        if weights["type"] == "pretrain" and weights.get("dataset") not in config.get("source_datasets", {}):
            errors.append(f"architectures.{key}.weights.dataset: '{weights.get('dataset')}' must be a key of "
                          "source_datasets")
        if weights["type"] == "imagenet" and not spec.imagenet_weights:
            errors.append(f"architectures.{key}.weights: '{kind}' has no ImageNet weights; use pretrain or none")
        preprocess = {**spec.default_preprocess, **(entry or {}).get("preprocess", {})}
        if preprocess["crop"] > preprocess["resize"]:
            errors.append(f"architectures.{key}.preprocess.crop: {preprocess['crop']} is larger than resize "
                          f"{preprocess['resize']} (the shorter side): the crop would be padded with black; "
                          "allowed: crop <= resize")
    for key, entry in config["strategies"].items():
        entry = entry or {}
        kind = entry.get("type", key)
        if kind not in STRATEGIES:
            errors.append(f"strategies.{key}: unknown strategy '{kind}' (set 'type' to one of: "
                          f"{', '.join(STRATEGIES.names())})")
            continue
        settings = {k: v for k, v in entry.items() if k not in SELECTION_KEYS}
        errors += STRATEGIES.get(kind).problems(settings, f"strategies.{key}")
    for key, entry in config["architectures"].items():
        for section in ("datasets", "strategies"):
            for name in (entry or {}).get(section, []):
                if name not in config[section]:
                    errors.append(f"architectures.{key}.{section}: '{name}' is not a key of {section}")
    for key, entry in config["strategies"].items():
        for name in (entry or {}).get("architectures", []):
            if name not in config["architectures"]:
                errors.append(f"strategies.{key}.architectures: '{name}' is not a key of architectures")
    from medtl.report.declaration import REPORT
    from medtl.training.declaration import TRAINING

    # the sections declared as Settings (their defaults are not in the schema): every problem by key path here,
    # not as the planner's bare error while the rules are parsed
    errors += TRAINING.problems(config.get("training"), "training")
    errors += REPORT.problems(config.get("report"), "report")
    reference = {**REPORT, **(config.get("report") or {})}["reference"]
    if config["datasets"] and reference not in config["strategies"]:
        errors.append(f"report.reference: '{reference}' is not one of the configured strategies")
    if errors:
        raise config_error(errors)
