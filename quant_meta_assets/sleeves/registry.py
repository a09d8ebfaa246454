"""Sleeve registry: YAML -> ``SleeveProfile``; sleeve-name validation; strategy resolution.

Registry file (YAML, the safe loader only)::

    defaults:            # optional: timeout_s, max_retries, cost_bps, rebalance, max_gross, check_lookahead
      timeout_s: 300
      max_retries: 1
    sleeves:             # required, non-empty, order preserved
      - name: momentum_12_1
        strategy: momentum_12_1          # built-in, or package.module:function
        universe: [AAPL, MSFT]           # optional, default: every ticker
        params: {top_n: 5}               # optional: names checked against the strategy signature,
                                         # a built-in's values against strategies.PARAM_SPECS
        rebalance: monthly               # daily | weekly | monthly | quarterly
        cost_bps: 5                      # optional: the sleeve's one-way rate on every asset;
                                         # omitted = each asset's half-spread (costs/cost_model.py)
        check_lookahead: true            # plug-ins: run the look-ahead check (sleeves/lookahead.py;
                                         # one more call of the strategy); false turns it off

Source: the ``path`` argument, else ``$QUANT_META_SLEEVES``, else the bundled
``quant_meta_assets/data/sleeves.yaml``.

Trust: a ``package.module:function`` strategy is imported and executed, so a registry file is
as trusted as code. YAML is never loaded with a loader that can build Python objects.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.resources
import inspect
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from quant_meta_assets import settings
from quant_meta_assets.errors import RegistryError
from quant_meta_assets.prices import REBALANCE_FREQUENCIES

SLEEVES_ENV_VAR = settings.SLEEVES_ENV
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_RETRIES = 1
DEFAULT_MAX_GROSS = 2.0  # sum of |target weight| a sleeve may trade to (2.0: e.g. 150/50 or 100/100)
SLEEVE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SLEEVE_NAME_RULE = "1-64 characters from A-Z, a-z, 0-9, '_' and '-'"

_SLEEVE_KEYS = frozenset(
    {"name", "strategy", "universe", "params", "rebalance", "cost_bps", "max_gross", "timeout_s", "max_retries",
     "check_lookahead"}
)
_DEFAULT_KEYS = frozenset({"rebalance", "cost_bps", "max_gross", "timeout_s", "max_retries", "check_lookahead"})
_TOP_KEYS = frozenset({"defaults", "sleeves"})

__all__ = [
    "DEFAULT_MAX_GROSS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "SLEEVES_ENV_VAR",
    "SleeveProfile",
    "check_params",
    "did_you_mean",
    "is_plugin",
    "load_registry",
    "resolve_strategy",
    "validate_sleeve_name",
    "validate_universe",
]


def _reject_unknown_keys(mapping: Mapping, allowed: frozenset[str], what: str, where: str = "") -> None:
    """RegistryError when ``mapping`` has keys outside ``allowed``: ``<what> [unknown keys]<where>``,
    a 'did you mean' for the first unknown key, then the allowed keys."""
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise RegistryError(f"{what} {unknown!r}{where}{did_you_mean(unknown[0], allowed)}; allowed {sorted(allowed)}")


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (difflib), or ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_sleeve_name(name: object) -> str:
    """Return ``name`` if it matches ``^[A-Za-z0-9_-]{1,64}$`` (ASCII only), else RegistryError.

    Sleeve names become Dagster partition keys and file names: this is a safety boundary.
    """
    if not isinstance(name, str):
        raise RegistryError(
            f"invalid sleeve name {name!r}: must be a string ({SLEEVE_NAME_RULE}), "
            f"got {type(name).__name__} (quote it in YAML: names like 0123, yes, on are not strings)"
        )
    if SLEEVE_NAME_PATTERN.fullmatch(name) is None:
        raise RegistryError(f"invalid sleeve name {name!r}: must be {SLEEVE_NAME_RULE}")
    return name


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SleeveProfile:
    """One sleeve of the registry. Validated on construction; picklable (shipped to Ray workers).

    ``params`` is a plain dict (picklable), excluded from the hash; it is copied on construction.
    """

    name: str
    strategy: str
    universe: tuple[str, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    rebalance: str = "monthly"
    cost_bps: float | None = None
    max_gross: float = DEFAULT_MAX_GROSS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    check_lookahead: bool = True  # plug-ins only: the prefix-invariance check after each run

    def __post_init__(self) -> None:
        validate_sleeve_name(self.name)
        where = f"sleeve {self.name!r}"
        if not isinstance(self.strategy, str) or not self.strategy.strip():
            raise RegistryError(f"{where}: 'strategy' must be a non-empty string, got {self.strategy!r}")
        if self.universe is not None:
            if isinstance(self.universe, (str, bytes)) or not isinstance(self.universe, (list, tuple)):
                raise RegistryError(
                    f"{where}: 'universe' must be a list of ticker strings, got {type(self.universe).__name__}"
                )
            bad = [t for t in self.universe if not isinstance(t, str) or not t]
            if bad:
                raise RegistryError(f"{where}: 'universe' must be a list of ticker strings; bad entries {bad!r}")
            if not self.universe:
                raise RegistryError(f"{where}: 'universe' is empty; omit it to use every ticker")
            dups = sorted({t for t in self.universe if self.universe.count(t) > 1})
            if dups:
                raise RegistryError(f"{where}: duplicate ticker(s) in 'universe': {dups!r}")
            object.__setattr__(self, "universe", tuple(self.universe))
        if not isinstance(self.params, Mapping):
            raise RegistryError(f"{where}: 'params' must be a mapping, got {type(self.params).__name__}")
        bad_keys = [k for k in self.params if not isinstance(k, str)]
        if bad_keys:
            raise RegistryError(f"{where}: 'params' keys must be strings, got {bad_keys!r}")
        object.__setattr__(self, "params", dict(self.params))
        if self.rebalance not in REBALANCE_FREQUENCIES:
            raise RegistryError(
                f"{where}: 'rebalance' must be one of {list(REBALANCE_FREQUENCIES)}, got {self.rebalance!r}"
            )
        if self.cost_bps is not None and (not _is_number(self.cost_bps) or self.cost_bps < 0):
            raise RegistryError(f"{where}: 'cost_bps' must be a finite number >= 0, got {self.cost_bps!r}")
        if not _is_number(self.max_gross) or self.max_gross <= 0:
            raise RegistryError(f"{where}: 'max_gross' must be a finite number > 0, got {self.max_gross!r}")
        if not _is_number(self.timeout_s) or self.timeout_s <= 0:
            raise RegistryError(f"{where}: 'timeout_s' must be a finite number > 0, got {self.timeout_s!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise RegistryError(f"{where}: 'max_retries' must be an integer >= 0, got {self.max_retries!r}")
        if not isinstance(self.check_lookahead, bool):
            raise RegistryError(f"{where}: 'check_lookahead' must be true or false, got {self.check_lookahead!r}")
        if self.cost_bps is not None:
            object.__setattr__(self, "cost_bps", float(self.cost_bps))
        object.__setattr__(self, "max_gross", float(self.max_gross))
        object.__setattr__(self, "timeout_s", float(self.timeout_s))


def is_plugin(spec: str) -> bool:
    """A ``package.module:function`` strategy (the built-ins are plain names)."""
    return isinstance(spec, str) and ":" in spec


def resolve_strategy(spec: str) -> Callable[..., pd.DataFrame]:
    """A built-in strategy name, or ``package.module:function`` imported with importlib."""
    from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES

    if not isinstance(spec, str) or not spec.strip():
        raise RegistryError(f"strategy must be a non-empty string, got {spec!r}")
    if ":" not in spec:
        fn = BUILTIN_STRATEGIES.get(spec)
        if fn is None:
            raise RegistryError(
                f"unknown built-in strategy {spec!r}{did_you_mean(spec, BUILTIN_STRATEGIES)}; "
                f"known built-ins: {sorted(BUILTIN_STRATEGIES)} (or use 'package.module:function')"
            )
        return fn
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise RegistryError(f"strategy {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure: name the module and the cause
        raise RegistryError(
            f"strategy {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"strategy {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RegistryError(f"strategy {spec!r}: {attr!r} is not callable ({type(obj).__name__})")
    return obj


def check_params(
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    where: str,
    param_lines: Mapping[str, int] | None = None,
) -> None:
    """Check ``params`` against ``fn(prices, **params)``: names against its signature (skipped if it
    takes **kwargs), and, for a built-in strategy, each value's type and range
    (``strategies.PARAM_SPECS``). An error names the param and, given ``param_lines``, its line."""
    from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES, PARAM_SPECS

    lines = param_lines or {}

    def at(name: str) -> str:
        return f"{where}, param {name!r}" + (f" (line {lines[name]})" if name in lines else "")

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: cannot check
        return
    parameters = list(sig.parameters.values())
    positional = [
        p for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not positional and not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        raise RegistryError(f"{where}: strategy takes no positional 'prices' argument {sig}")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    first = positional[0].name if positional else None
    accepted = [
        p.name for p in parameters
        if p.name != first
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    for name in params:
        if name not in accepted:
            raise RegistryError(
                f"{at(name)}: unknown param{did_you_mean(name, accepted)}; the strategy accepts {accepted!r}"
            )
    missing = [
        p.name for p in parameters
        if p.name != first
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.default is inspect.Parameter.empty
        and p.name not in params
    ]
    if missing:
        raise RegistryError(f"{where}: missing required param(s) {missing!r}")
    builtin = next((name for name, f in BUILTIN_STRATEGIES.items() if f is fn), None)
    specs = PARAM_SPECS.get(builtin) if builtin is not None else None
    if specs is None:  # a plug-in: its simple annotations (int, float, str, bool, X | None) are checked
        for name, value in params.items():
            problem = _annotation_problem(fn, name, value)
            if problem is not None:
                raise RegistryError(f"{at(name)}: {problem}")
        return
    values = {p.name: p.default for p in parameters if p.name in specs} | dict(params)
    for name, value in params.items():
        spec = specs[name]
        problem = spec.problem(value)
        if problem is None and spec.below is not None and value >= values[spec.below]:
            problem = f"must be < {spec.below} ({values[spec.below]!r}), got {value!r}"
        if problem is not None:
            raise RegistryError(f"{at(name)}: {problem}")


_SIMPLE_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _annotation_problem(fn: Callable[..., Any], name: str, value: object) -> str | None:
    """Why ``value`` does not fit ``fn``'s annotation of ``name`` (int, float, str, bool, optionally
    ``| None``), or None when it fits or the annotation is anything else (then the strategy checks)."""
    import types
    import typing

    try:
        hint = typing.get_type_hints(fn).get(name)
    except Exception:  # unresolvable annotations: nothing to check here
        return None
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    allowed = set(typing.get_args(hint)) if union else {hint}
    none_ok = type(None) in allowed
    allowed.discard(type(None))
    if not allowed or not allowed <= set(_SIMPLE_TYPES):
        return None
    if value is None:
        return None if none_ok else f"must not be null (annotated {_hint_name(hint)})"
    return None if any(_fits(value, t) for t in allowed) else (
        f"must be {' or '.join(_SIMPLE_TYPES[t] for t in allowed)} (annotated {_hint_name(hint)}), got {value!r}"
    )


def _fits(value: object, kind: type) -> bool:
    """YAML's value against a simple annotation: a bool is no number; an int is a float."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


def _hint_name(hint: object) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def validate_universe(profile: SleeveProfile, prices: pd.DataFrame) -> tuple[str, ...]:
    """Return the sleeve's tickers (``None`` = every price column); RegistryError if any is missing."""
    available = [str(c) for c in prices.columns]
    if profile.universe is None:
        return tuple(available)
    known = set(available)
    missing = [t for t in profile.universe if t not in known]
    if missing:
        raise RegistryError(
            f"sleeve {profile.name!r}: universe ticker(s) {missing!r} not in the price data "
            f"({len(available)} tickers available)"
        )
    return profile.universe


def _read_registry_text(path: str | os.PathLike[str] | None) -> tuple[str, str]:
    if path is None:
        env = os.environ.get(SLEEVES_ENV_VAR)
        if env is not None and env.strip():
            path = env
    if path is None:
        resource = importlib.resources.files("quant_meta_assets").joinpath("data/sleeves.yaml")
        return resource.read_text(encoding="utf-8"), "bundled quant_meta_assets/data/sleeves.yaml"
    file = Path(path)
    label = f"registry file {str(file)!r}"
    try:
        return file.read_text(encoding="utf-8"), label
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{label} cannot be read: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class _EntryLines:
    """1-based lines of one ``sleeves:`` entry: the entry, each of its keys, each of its params."""

    line: int
    keys: dict[str, int] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)


def _mapping_lines(node: object) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _params_node(entry: object) -> object:
    if not isinstance(entry, yaml.MappingNode):
        return None
    return next((v for k, v in entry.value if isinstance(k, yaml.ScalarNode) and k.value == "params"), None)


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it: the same documents, ~10x faster (a 1,000-sleeve
registry is read by several steps of a run)."""


def _sleeve_lines(text: str) -> list[_EntryLines]:
    """Where each ``sleeves:`` entry, key and param is in the file (for messages); best effort."""
    try:
        root = yaml.compose(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "sleeves" and isinstance(value, yaml.SequenceNode):
            return [_EntryLines(item.start_mark.line + 1, _mapping_lines(item), _mapping_lines(_params_node(item)))
                    for item in value.value]
    return []


def load_registry(path: str | os.PathLike[str] | None = None) -> list[SleeveProfile]:
    """Load, validate and return the sleeves in file order. Every error names the file and sleeve."""
    text, label = _read_registry_text(path)
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - the safe loader, libyaml's when built
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RegistryError(f"{label}: YAML syntax error{where}: {problem}") from exc
    if data is None:
        raise RegistryError(f"{label} is empty: expected a mapping with a 'sleeves:' list")
    if not isinstance(data, dict):
        raise RegistryError(f"{label}: top level must be a mapping with 'sleeves:', got {type(data).__name__}")
    _reject_unknown_keys(data, _TOP_KEYS, f"{label}: unknown top-level key(s)")

    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RegistryError(f"{label}: 'defaults' must be a mapping, got {type(defaults).__name__}")
    _reject_unknown_keys(defaults, _DEFAULT_KEYS, f"{label}: unknown key(s)", " in 'defaults'")

    sleeves = data.get("sleeves")
    if sleeves is None or (isinstance(sleeves, list) and not sleeves):
        raise RegistryError(f"{label}: no sleeves (the 'sleeves:' list is missing or empty)")
    if not isinstance(sleeves, list):
        raise RegistryError(f"{label}: 'sleeves' must be a list, got {type(sleeves).__name__}")

    lines = _sleeve_lines(text)
    profiles: list[SleeveProfile] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(sleeves):
        where_in_file = lines[i] if i < len(lines) else _EntryLines(0)
        line = where_in_file.line or None
        at = f"{label}, sleeve #{i + 1}" + (f" (line {line})" if line else "")
        if not isinstance(entry, dict):
            raise RegistryError(f"{at}: each sleeve must be a mapping, got {type(entry).__name__}")
        raw_name = entry.get("name")
        if raw_name is not None:
            at = f"{label}, sleeve {raw_name!r}" + (f" (line {line})" if line else "")
        for key in entry:
            if key not in _SLEEVE_KEYS:
                key_line = where_in_file.keys.get(str(key))
                raise RegistryError(
                    f"{at}: unknown key(s) {[str(key)]!r}" + (f" at line {key_line}" if key_line else "")
                    + f"{did_you_mean(key, _SLEEVE_KEYS)}; allowed {sorted(_SLEEVE_KEYS)}"
                )
        for required in ("name", "strategy"):
            if required not in entry:
                raise RegistryError(f"{at}: missing required key {required!r}")
        try:
            name = validate_sleeve_name(raw_name)
        except RegistryError as exc:
            raise RegistryError(f"{at}: {exc}") from None
        if name in seen:
            raise RegistryError(f"{at}: duplicate sleeve name {name!r} (first defined at {seen[name]})")
        seen[name] = f"line {line}" if line else f"sleeve #{i + 1}"

        merged = {**defaults, **entry}
        universe = merged.get("universe")
        if universe is not None and not isinstance(universe, list):
            raise RegistryError(f"{at}: 'universe' must be a list of ticker strings, got {type(universe).__name__}")
        params = merged.get("params")
        if params is None:
            params = {}
        try:
            profile = SleeveProfile(
                name=name,
                strategy=merged["strategy"],
                universe=tuple(universe) if universe is not None else None,
                params=params,
                rebalance=merged.get("rebalance", "monthly"),
                cost_bps=merged.get("cost_bps"),
                max_gross=merged.get("max_gross", DEFAULT_MAX_GROSS),
                timeout_s=merged.get("timeout_s", DEFAULT_TIMEOUT_S),
                max_retries=merged.get("max_retries", DEFAULT_MAX_RETRIES),
                check_lookahead=merged.get("check_lookahead", True),
            )
            try:
                fn = resolve_strategy(profile.strategy)
            except RegistryError as exc:
                strategy_line = where_in_file.keys.get("strategy")
                raise RegistryError(f"'strategy' (line {strategy_line}): {exc}" if strategy_line else str(exc)) from exc
            check_params(
                fn, profile.params, f"strategy {profile.strategy!r}", param_lines=where_in_file.params,
            )
        except RegistryError as exc:
            raise RegistryError(f"{at}: {exc}") from exc
        profiles.append(profile)
    return profiles
