"""Type and range checks of configuration dataclasses read from untrusted model cards.

A card's ``architecture`` / ``schedule`` objects are checked field by field against the dataclass
they configure (:func:`check_fields`: JSON types, required fields) and then against the class's
sane ranges (each config class's ``validate()``, built on :func:`check_range`), before anything is
allocated. Failures raise ``ValueError`` whose message starts with the field name, so a caller can
prefix the card path and the section (``card.json: architecture.n_layers = ...``).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, fields
from typing import Any

_JSON_TYPES = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string"}


def _type_ok(annotation: str, value: Any) -> bool:
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation == "str":
        return isinstance(value, str)
    return True


def check_fields(cls, data: Any) -> dict:
    """The fields of dataclass ``cls`` found in ``data`` (a dict), type-checked; unknown keys ignored.

    Raises ValueError naming the field: ``data`` not an object, a required field missing, or a value
    of the wrong JSON type (ints must be integers, not 1e7 or true; floats finite).
    """
    if not isinstance(data, dict):
        raise ValueError(f"must be an object, got {type(data).__name__} {data!r}")
    out = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{f.name} is missing")
            continue
        value = data[f.name]
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if not _type_ok(annotation, value):
            raise ValueError(f"{f.name} = {value!r} must be {_JSON_TYPES.get(annotation, annotation)}")
        out[f.name] = float(value) if annotation == "float" else value
    return out


def check_range(name: str, value: float, lo: float, hi: float, *, open_low: bool = False,
                open_high: bool = False) -> None:
    """ValueError ``"<name> = <value> is outside [lo, hi]"`` unless ``lo <= value <= hi`` (or open ends)."""
    low_ok = value > lo if open_low else value >= lo
    high_ok = value < hi if open_high else value <= hi
    if not (low_ok and high_ok):
        raise ValueError(f"{name} = {value!r} is outside {'(' if open_low else '['}{lo}, {hi}{')' if open_high else ']'}")


def check_ranges(config, ranges: dict[str, tuple[float, float]]) -> None:
    """:func:`check_range` for each ``field: (lo, hi)`` of ``config`` (closed intervals)."""
    for name, (lo, hi) in ranges.items():
        check_range(name, getattr(config, name), lo, hi)
