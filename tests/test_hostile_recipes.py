"""Every number in a recipe is checked at the door: generated values (NaN, ±inf, negative, huge, wrong types,
empty) at every numeric key of the schema, in a classification and a detection recipe, either load as a valid
recipe or give one RecipeError line naming the key; NaN and infinities never load."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chiquito_or_not.core.errors import RecipeError
from chiquito_or_not.core.recipe import CompositeSource, Recipe, load_recipe

CLASSIFY = {
    "seed": 1,
    "dataset": {"faces": {"detector": "lbp"}},
    "finetune": {"frozen": {}, "augmented": {}, "unfrozen": {}, "augment": {}},
    "classes": {"a": {"sources": [{"kind": "python", "images": ["brick"]}]}},
}
DETECT = {
    "task": "detect",
    "finetune": {"frozen": {}},
    "detect": {
        "labels": ["cat"],
        "sources": [
            {
                "images": {
                    "kind": "composite",
                    "objects": {"cat": {"sources": [{"kind": "folder", "path": "cut"}]}},
                    "backgrounds": [{"kind": "python", "images": ["brick"]}],
                }
            }
        ],
    },
}


def _numeric_keys(tp, path: tuple) -> list[tuple[tuple, object]]:
    """(key path, field type) of every int / float / tuple-of-numbers field under dataclass `tp`."""
    out = []
    for f in dataclasses.fields(tp):
        t = f.type if not isinstance(f.type, str) else typing.get_type_hints(tp)[f.name]
        args = typing.get_args(t)
        if dataclasses.is_dataclass(t):
            out += _numeric_keys(t, (*path, f.name))
        elif t in (int, float) or (args and all(a in (int, float) for a in args if a is not Ellipsis)):
            out.append(((*path, f.name), t))
        elif float in args:  # float | Literal["auto"]
            out.append(((*path, f.name), t))
    return out


KEYS = [("classify", k) for k, _ in _numeric_keys(Recipe, ()) if k[0] not in ("detect",)]
KEYS += [("detect", k) for k, _ in _numeric_keys(Recipe, ()) if k[0] == "detect"]
KEYS += [("detect", ("detect", "sources", 0, "images", *k)) for k, _ in _numeric_keys(CompositeSource, ())]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def _toml(d: dict, prefix: str = "") -> str:
    """A TOML document for nested dicts (lists of dicts become arrays of tables)."""
    scalars, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append(f"\n[{prefix}{k}]\n" + _toml(v, f"{prefix}{k}.").lstrip("\n"))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for x in v:
                tables.append(f"\n[[{prefix}{k}]]\n" + _toml(x, f"{prefix}{k}.").lstrip("\n"))
        else:
            scalars.append(f"{k} = {_toml_value(v)}\n")
    return "".join(scalars) + "".join(tables)


def _with(base: dict, key: tuple, value) -> dict:
    d = json.loads(json.dumps(base))
    at = d
    for k in key[:-1]:
        at = at.setdefault(k, {}) if isinstance(k, str) else at[k]
    at[key[-1]] = value
    return d


VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -1e300, 1e300, 0, -0.0, 10**15, "", "1", [], [1], True]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=4),
    st.text(max_size=4),
)


@pytest.mark.parametrize("which,key", KEYS, ids=[".".join(map(str, k)) for _, k in KEYS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_every_numeric_key_loads_or_is_one_line(tmp_path, which, key, value):
    base = CLASSIFY if which == "classify" else DETECT
    p = tmp_path / "r.toml"
    p.write_text(_toml(_with(base, key, value)))
    try:
        r = load_recipe(p)
    except RecipeError as e:
        msg = str(e)
        assert "\n" not in msg and str(p) in msg, msg
        return
    # it loaded: the value must be a finite number (every number the recipe holds is)
    for v in value if isinstance(value, list) else [value]:
        assert not (isinstance(v, float) and not math.isfinite(v)), (key, value)
    if isinstance(value, bool) or (isinstance(value, str) and value != "auto"):
        pytest.fail(f"{key} = {value!r} loaded: a number key took {type(value).__name__}")
    assert r.path == str(p)


def test_the_command_line_says_one_line_and_exits_2_for_a_nan(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(_toml(_with(CLASSIFY, ("finetune", "frozen", "lr"), math.nan)))
    r = subprocess.run([sys.executable, "-m", "chiquito_or_not", "finetune", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "'finetune.frozen.lr' = nan is not a finite number" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_detection_recipe_refuses_face_crops(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(_toml(_with(DETECT, ("dataset", "faces", "detector"), "lbp")))
    with pytest.raises(RecipeError, match=r"'dataset.faces' crops faces for a classifier"):
        load_recipe(p)
