"""A recipe's schema errors as one line each: the file, the key as the recipe spells it, what was expected, the fix.

pydantic finds what is wrong; this module says it in the recipe's words. It walks the error's location
through the schema and the data together (skipping the tags pydantic adds for the members of a union), so
it knows the key (`classes.a.sources[0].path`), the type declared there and the value the file gave.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Annotated, Literal, Union

__all__ = ["type_name", "schema_error_message"]

_MISSING = object()
_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}


def _base(tp):
    """`tp` without Annotated's metadata."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _union_args(tp) -> tuple:
    tp = _base(tp)
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else ()


def type_name(tp) -> str:
    """What a value of schema type `tp` looks like, in a recipe's words."""
    tp = _base(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {type_name(args[0])}"
        return f"a list of {len(args)} values"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


@dataclasses.dataclass
class _Place:
    """Where an error points: the key as a recipe spells it, the declared type, the value, the table above."""

    key: str = ""
    tp: object = None
    value: object = None
    parent: object = None  # the dataclass holding the key
    field: str = ""


def _hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def _discriminated(tp) -> bool:
    """Whether union `tp` is one of tables told apart by `kind` (a source)."""
    return all(dataclasses.is_dataclass(_base(a)) for a in _union_args(tp))


def _member(tp, value, seg):
    """The member of union `tp` that pydantic's location segment `seg` names."""
    args = _union_args(tp)
    if isinstance(value, dict) and "kind" in value:  # a source: the discriminator's tag
        for a in args:
            if dataclasses.is_dataclass(a) and a.__dataclass_fields__["kind"].default == seg:
                return a
    for a in args:
        b = _base(a)
        label = "literal" if typing.get_origin(b) is Literal else getattr(b, "__name__", "")
        if str(seg).startswith(label):
            return a
    return None


def _step(place: _Place, seg) -> _Place:
    """One location segment further into the schema and the data."""
    tp, value = _base(place.tp), place.value
    if dataclasses.is_dataclass(tp):
        sub = value.get(seg, _MISSING) if isinstance(value, dict) else _MISSING
        hint = _hints(tp).get(seg)
        return _Place(f"{place.key}.{seg}" if place.key else str(seg), hint, sub, tp, str(seg))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        elem = args[0] if len(args) == 2 and args[1] is Ellipsis else (args[seg] if seg < len(args) else None)
        sub = value[seg] if isinstance(value, list) and isinstance(seg, int) and seg < len(value) else _MISSING
        return _Place(f"{place.key}[{seg}]", elem, sub, None, "")
    if typing.get_origin(tp) is dict:
        sub = value.get(seg, _MISSING) if isinstance(value, dict) else _MISSING
        return _Place(f"{place.key}.{seg}", typing.get_args(tp)[1], sub, None, "")
    return place


def _walk(root_tp, data, loc) -> tuple[_Place, _Place]:
    """(the place `loc` names, the place above it)."""
    place, above = _Place("", root_tp, data), _Place("", root_tp, data)
    for seg in loc:
        if _union_args(place.tp):
            member = _member(place.tp, place.value, seg)
            if member is not None:  # a union member's tag, not a key
                place = dataclasses.replace(place, tp=member)
                continue
        above, place = place, _step(place, seg)
    return place, above


def _bounds(place: _Place) -> str:
    lo = hi = None
    info = getattr(place.parent, "__pydantic_fields__", {}).get(place.field)
    for m in getattr(info, "metadata", ()):
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"


def _shown(v) -> str:
    return f"{type(v).__name__} {v!r}"


def _unknown_key(place: _Place, above: _Place) -> str:
    fields = list(_base(above.tp).__dataclass_fields__) if dataclasses.is_dataclass(_base(above.tp)) else []
    prefix = above.key + "." if above.key else ""
    close = difflib.get_close_matches(place.field, fields, n=1, cutoff=0.5)
    hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys here: {', '.join(fields)}"
    return f"unknown key '{place.key}'; {hint}"


def _missing(place: _Place, above: _Place) -> str:
    if place.field:  # a key of a table
        return f"missing required key '{place.key}' ({type_name(place.tp)})"
    return _wrong_length(above)


def _wrong_length(place: _Place) -> str:
    n = len(typing.get_args(_base(place.tp)))
    got = len(place.value) if isinstance(place.value, list) else 0
    return f"'{place.key}' needs exactly {n} values, got {got}"


def _fixed_tuple(place: _Place) -> bool:
    """Whether `place` is a list of a fixed number of values, given as a list."""
    args = typing.get_args(_base(place.tp)) if typing.get_origin(_base(place.tp)) is tuple else (Ellipsis,)
    return Ellipsis not in args and isinstance(place.value, list)


def _bad_kind(place: _Place) -> str:
    kinds = [a.__dataclass_fields__["kind"].default for a in _union_args(place.tp)]
    kind = place.value.get("kind") if isinstance(place.value, dict) else None
    close = difflib.get_close_matches(str(kind), kinds, n=1)
    return (
        f"'{place.key or '(top level)'}.kind' = {kind!r} is not a source kind; "
        + (f"did you mean {close[0]!r}? " if close else "")
        + f"choose one of {', '.join(kinds)}"
    )


def _not_allowed(place: _Place) -> str:
    allowed = typing.get_args(_base(place.tp))
    close = difflib.get_close_matches(str(place.value), [str(a) for a in allowed], n=1)
    return f"'{place.key}' = {place.value!r} is not allowed; use {type_name(place.tp)}" + (
        f" (did you mean {close[0]!r}?)" if close else ""
    )


def _about_value(types_: set, place: _Place) -> str:
    """The message for a value pydantic refused: not finite, out of range, not allowed, or the wrong type."""
    if "finite_number" in types_ and isinstance(place.value, float) and not math.isfinite(place.value):
        return f"'{place.key}' = {place.value} is not a finite number; give one such as 0.5"
    if types_ <= _RANGE_ERRORS:
        shown = float(place.value) if _base(place.tp) is float else place.value  # as the recipe holds it
        return f"'{place.key}' = {shown} is out of range; use a value in {_bounds(place)}"
    if typing.get_origin(_base(place.tp)) is Literal:
        return _not_allowed(place)
    if types_ & {"too_long", "too_short"} and isinstance(place.value, list):
        return _wrong_length(place)
    return f"'{place.key or '(top level)'}' expected {type_name(place.tp)}, got {_shown(place.value)}"


def schema_error_message(errors: list[dict], root_tp, data) -> str:
    """The first schema error of a recipe (pydantic's `errors()`), in the recipe's words, without the file."""
    first = errors[0]
    place, above = _walk(root_tp, data, first["loc"])
    kind = first["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return _unknown_key(place, above)
    if kind == "missing":
        return _missing(place, above)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _bad_kind(place)
    if _fixed_tuple(above) and len(above.value) != len(typing.get_args(_base(above.tp))):
        return _wrong_length(above)  # the count before the values
    # a union's members each give an error for the same key: take them together
    same = {e["type"] for e in errors if _walk(root_tp, data, e["loc"])[0].key == place.key}
    return _about_value(same, _widest(root_tp, data, first["loc"]))


def _widest(root_tp, data, loc) -> _Place:
    """The place `loc` names, with its declared type before a union member was chosen."""
    place = _Place("", root_tp, data)
    for seg in loc:
        if _union_args(place.tp) and _member(place.tp, place.value, seg) is not None:
            if not _discriminated(place.tp):  # a number or a word: the key is this union
                return place
            place = dataclasses.replace(place, tp=_member(place.tp, place.value, seg))
            continue
        place = _step(place, seg)
    return place
