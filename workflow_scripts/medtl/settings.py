"""Declared settings: each setting of a strategy, a dataset source or a dense model is declared once,
with its type, the values it allows, its default and what it does. From that one declaration come

- the config check (``Settings.problems``): an unknown key, a wrong type or a value out of range
  stops the run before any job starts, naming the key path, the value and what is allowed;
- the defaults a job uses (``Settings.resolve``; a ``Settings`` is also the mapping of its defaults,
  so ``{**spec.options, **options}`` merges config values over them);
- the settings tables of docs/configuration.md and docs/datasets.md (``medtl.workflow.docs``);
- a job's cache key (``Settings.key``): the resolved settings, each setting at its value, so that a changed
  default reruns exactly the jobs it affects; a setting added later declares ``neutral``, the value that does
  what jobs did before it existed, and is left out of the key at that value, so adding it reruns nothing.

Nothing here imports more than the standard library: the workflow reads declarations while it plans.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any, Iterator

#: the default of a setting that must be given
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
#: no neutral value: the setting is always in a job's cache key
ALWAYS_KEYED: Any = type("AlwaysKeyed", (), {"__repr__": lambda self: "ALWAYS_KEYED"})()


def show(value: Any) -> str:
    """A config value as a user wrote it in YAML: 'text', true, 0.01, [a, b]."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Setting:
    """One setting: its default (``REQUIRED``: none, the config must give it), what it does, and whether
    null is allowed besides the values of its type.

    ``neutral``: for a setting added after jobs were first keyed by their resolved settings, the value that
    does exactly what those jobs did without it (an off switch, a factor of 1). At that value it is left out of
    the job's cache key, so adding the setting reruns no finished job. Never change it once released; change
    ``default`` instead (the jobs it affects rerun)."""
    default: Any = REQUIRED
    doc: str = ""
    _: KW_ONLY
    nullable: bool = False
    neutral: Any = ALWAYS_KEYED

    def allows(self, value: Any) -> bool:
        return True

    def allowed(self) -> str:
        """What the setting allows, in words: 'an integer >= 1'."""
        return "any value"

    def problem(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        if self.allows(value):
            return None
        return f"expected {self.allowed()}" + (" or null" if self.nullable else "")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _bounds(minimum, maximum, above, below) -> str:
    def num(v) -> str:  # an integer in full (a seed's 4294967295, not 4.29497e+09)
        return str(v) if isinstance(v, int) else f"{v:g}"

    parts = []
    if minimum is not None:
        parts.append(f">= {num(minimum)}")
    if above is not None:
        parts.append(f"> {num(above)}")
    if maximum is not None:
        parts.append(f"<= {num(maximum)}")
    if below is not None:
        parts.append(f"< {num(below)}")
    return " and ".join(parts)


def _in_bounds(value, minimum, maximum, above, below) -> bool:
    return ((minimum is None or value >= minimum) and (maximum is None or value <= maximum)
            and (above is None or value > above) and (below is None or value < below))


@dataclass(frozen=True)
class Int(Setting):
    """An integer (true/false and 2.0 are not), optionally in a range, or one of the words in ``also``."""
    minimum: int | None = None
    maximum: int | None = None
    also: tuple = ()

    def allows(self, value):
        if value in self.also and isinstance(value, str):
            return True
        return isinstance(value, int) and not isinstance(value, bool) and \
            _in_bounds(value, self.minimum, self.maximum, None, None)

    def allowed(self):
        text = "an integer"
        bounds = _bounds(self.minimum, self.maximum, None, None)
        text += f" {bounds}" if bounds else ""
        return text + "".join(f" or {show(w)}" for w in self.also)


@dataclass(frozen=True)
class Number(Setting):
    """A number (integers count), optionally in a range: ``minimum``/``maximum`` inclusive,
    ``above``/``below`` exclusive."""
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None

    def allows(self, value):
        return _number(value) and _in_bounds(value, self.minimum, self.maximum, self.above, self.below)

    def allowed(self):
        bounds = _bounds(self.minimum, self.maximum, self.above, self.below)
        return f"a number {bounds}" if bounds else "a number"


@dataclass(frozen=True)
class Bool(Setting):
    """true or false; a string such as "no" is refused rather than read as true."""

    def allows(self, value):
        return isinstance(value, bool)

    def allowed(self):
        return "true or false"


@dataclass(frozen=True)
class Choice(Setting):
    choices: tuple = ()

    def allows(self, value):
        return any(value == c and type(value) is type(c) for c in self.choices)  # true is not 1

    def allowed(self):
        return "one of " + ", ".join(show(c) for c in self.choices)


@dataclass(frozen=True)
class Text(Setting):
    """A string, optionally matching ``pattern`` (described by ``meaning``)."""
    pattern: str | None = None
    meaning: str = ""

    def allows(self, value):
        return isinstance(value, str) and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)

    def allowed(self):
        return self.meaning or "a string"


@dataclass(frozen=True)
class TextList(Setting):
    """A list of strings (a single string is refused: write [name]), or one of the words in ``also``."""
    also: tuple = ()

    def allows(self, value):
        if isinstance(value, str) and value in self.also:
            return True
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def allowed(self):
        return "a list of strings" + "".join(f" or {show(w)}" for w in self.also)


@dataclass(frozen=True)
class IntList(Setting):
    """A list of integers, each optionally in a range (``minimum``/``maximum`` inclusive)."""
    minimum: int | None = None
    maximum: int | None = None

    def allows(self, value):
        return isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and _in_bounds(v, self.minimum, self.maximum, None, None)
            for v in value)

    def allowed(self):
        bounds = _bounds(self.minimum, self.maximum, None, None)
        return "a list of integers" + (f" {bounds}" if bounds else "")


@dataclass(frozen=True)
class Table(Setting):
    """A mapping (name -> value); ``values`` checks each value when given."""
    values: Setting | None = None
    also: tuple = ()  # words allowed instead of a mapping

    def allows(self, value):
        if isinstance(value, str) and value in self.also:
            return True
        return isinstance(value, dict) and (self.values is None or all(self.values.allows(v) for v in value.values()))

    def allowed(self):
        text = "a mapping" + (f" of {self.values.allowed()}" if self.values is not None else "")
        return text + "".join(f" or {show(w)}" for w in self.also)


@dataclass(frozen=True)
class Anything(Setting):
    """Free-form; ``meaning`` says what is expected."""
    meaning: str = "any value"

    def allowed(self):
        return self.meaning


def inferred(default: Any) -> Setting:
    """The setting a bare default implies, cautiously (the owner may take more than the default's type:
    a list where the default is a name): true/false, a number, a mapping; anything else unchecked."""
    if isinstance(default, bool):
        return Bool(default)
    if _number(default):
        return Number(default)
    if isinstance(default, dict):
        return Table(default)
    return Anything(default)


class Settings(Mapping):
    """An ordered declaration of settings. As a mapping it is the settings' defaults (a required
    setting has none and is left out), so code that merges config values over defaults keeps working.

    ``open``: other keys are let through unchecked. Only for a declaration read from a plain dict of
    defaults (:meth:`of`), which need not name every option its owner reads."""

    def __init__(self, *bases: "Settings", open: bool = False, **declared: Setting):
        self.open = open or any(base.open for base in bases)
        self.declared: dict[str, Setting] = {}
        for base in bases:
            self.declared.update(base.declared)
        for name, setting in declared.items():
            if not isinstance(setting, Setting):
                raise TypeError(f"setting '{name}' is declared as {setting!r}, not as a Setting "
                                "(Int, Number, Bool, Choice, Text, ...)")
            self.declared[name] = setting

    @classmethod
    def of(cls, declaration: "Settings | Mapping[str, Any] | None") -> "Settings":
        """A declaration as it is; a plain dict of defaults as open settings of their defaults' types."""
        if isinstance(declaration, Settings):
            return declaration
        return cls(open=True, **{k: inferred(v) for k, v in (declaration or {}).items()})

    # -- the mapping of defaults --------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        setting = self.declared[name]
        if setting.required:
            raise KeyError(name)
        return setting.default

    def __iter__(self) -> Iterator[str]:
        return (n for n, s in self.declared.items() if not s.required)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Settings({', '.join(self.declared)})"

    # -- checks ---------------------------------------------------------------------------------
    def problems(self, values: Mapping[str, Any] | None, where: str, ignore: tuple = ()) -> list[str]:
        """Every problem of config ``values`` (at key path ``where``), one line each."""
        if values is not None and not isinstance(values, Mapping):
            return [f"{where}: {show(values)} is not allowed; expected a mapping of settings"]
        values = values or {}
        out = []
        for key, value in values.items():
            if key in ignore:
                continue
            setting = self.declared.get(key)
            if setting is None and self.open:
                continue
            if setting is None:
                out.append(f"{where}.{key}: unknown setting{self._suggest(key)} "
                           f"(known: {', '.join(self.declared) or 'none'})")
                continue
            problem = setting.problem(value)
            if problem:
                default = "" if setting.required else f" (default {show(setting.default)}"
                out.append(f"{where}.{key}: {show(value)} is not allowed; {problem}{default})")
        for key, setting in self.declared.items():
            if setting.required and key not in values:
                out.append(f"{where}.{key}: required ({setting.allowed()})")
        return out

    def _suggest(self, key: str) -> str:
        close = difflib.get_close_matches(str(key), list(self.declared), n=1)
        return f" (did you mean '{close[0]}'?)" if close else ""

    def resolve(self, values: Mapping[str, Any] | None, where: str = "settings", ignore: tuple = ()) -> dict:
        """The defaults with ``values`` over them; ValueError naming every problem."""
        problems = self.problems(values, where, ignore)
        if problems:
            raise ValueError("; ".join(problems))
        return {**self, **{k: v for k, v in (values or {}).items() if k not in ignore}}

    # -- the cache key ---------------------------------------------------------------------------------
    def key(self, resolved: Mapping[str, Any], written: Mapping[str, Any] | None = None) -> dict:
        """What of ``resolved`` (the output of :meth:`resolve`) goes into a job's cache key: every setting
        at its value, except one that the config leaves out (not in ``written``, the config's own values)
        at its declared ``neutral`` value. A job gets the key and calls :meth:`unkey`; since the key holds
        no default, a changed default changes the keys of exactly the jobs that use it. A value the config
        writes stays in the key even at neutral: a setting read with ``.get(key, default)`` before it was
        declared was keyed as written, and those keys stay as they were."""
        written = written or {}
        return {k: v for k, v in resolved.items() if k in written or not self._at_neutral(k, v)}

    def unkey(self, keyed: Mapping[str, Any]) -> dict:
        """The resolved settings a cache key (:meth:`key`) stands for: each setting left out of it at its
        neutral value, never at its default (which may have changed since). A key holds every other setting;
        one built by hand (a benchmark, a test) may leave some out: those take their defaults."""
        left_out = {k: s.neutral for k, s in self.declared.items() if s.neutral is not ALWAYS_KEYED and k not in keyed}
        return {**self, **left_out, **keyed}

    def _at_neutral(self, name: str, value: Any) -> bool:
        setting = self.declared.get(name)
        return setting is not None and setting.neutral is not ALWAYS_KEYED and _same(value, setting.neutral)


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: as their JSON (1 and 1.0 differ from true; key order is not a difference)."""
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
