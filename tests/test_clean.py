"""Clean: every bad kind of file is rejected with its reason; the rest becomes RGB; raw files stay as they were."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chiquito_or_not.core.files import sha256_file
from chiquito_or_not.core.images import clean_one
from chiquito_or_not.core.recipe import DatasetSpec
from chiquito_or_not.data.clean import clean_files
from chiquito_or_not.data.sources import RawFile

from .helpers import photo, save_crops

SPEC = DatasetSpec(min_size=32)


def _jpeg(path: Path, arr, **kw) -> Path:
    Image.fromarray(arr).save(path, "JPEG", quality=92, **kw)
    return path


@pytest.fixture
def bad_files(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    cat = photo("chelsea")
    f = {}
    f["ok"] = _jpeg(d / "ok.jpg", cat)
    (d / "empty.jpg").write_bytes(b"")
    f["empty"] = d / "empty.jpg"
    (d / "text.jpg").write_text("<html>not an image</html>")
    f["text"] = d / "text.jpg"
    whole = (d / "ok.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    f["truncated"] = d / "truncated.jpg"
    frames = [Image.fromarray(np.full((64, 64, 3), c, np.uint8)) for c in (0, 128, 255)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    f["anim"] = d / "anim.gif"
    Image.fromarray(cat).save(d / "still.gif")
    f["gif"] = d / "still.gif"
    _jpeg(d / "tiny.jpg", cat[:16, :16])
    f["tiny"] = d / "tiny.jpg"
    Image.new("1", (12_000, 12_000)).save(d / "bomb.png")  # 144 MP, a few kB on disk
    f["bomb"] = d / "bomb.png"
    return f


@pytest.mark.parametrize(
    "name, reason",
    [
        ("empty", "empty_file"),
        ("text", "not_an_image"),
        ("truncated", "truncated_or_corrupt"),
        ("anim", "animated"),
        ("gif", "format_not_allowed"),
        ("tiny", "too_small"),
        ("bomb", "decompression_bomb"),
    ],
)
def test_bad_files_get_their_reason(bad_files, name, reason):
    got, detail, im = clean_one(bad_files[name], SPEC)
    assert got == reason and detail and im is None


def test_good_file_is_kept(bad_files):
    reason, _, im = clean_one(bad_files["ok"], SPEC)
    assert reason == "" and im.mode == "RGB" and im.size == (451, 300)


def test_exif_orientation_is_applied(tmp_path):
    arr = photo("chelsea")  # 451 wide, 300 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, "JPEG", exif=exif.tobytes())
    _, _, im = clean_one(p, SPEC)
    assert im.size == (300, 451)


@pytest.mark.parametrize("mode", ["P", "L", "CMYK", "I;16", "RGBA", "LA", "P+transparency"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    arr = photo("coffee")[:200, :200]
    im = Image.fromarray(arr)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257)
        assert im.mode == "I;16"
    elif mode == "P+transparency":
        im = im.convert("P")
        im.info["transparency"] = 0
    elif mode in ("RGBA", "LA"):
        im = im.convert(mode)
        px = np.array(im)
        px[:50, :50, -1] = 0  # a transparent corner
        im = Image.fromarray(px, mode)
    else:
        im = im.convert(mode)
    p = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(p)
    spec = DatasetSpec(min_size=32, background=(10, 200, 30))
    reason, _, out = clean_one(p, spec)
    assert reason == "" and out.mode == "RGB" and out.size == (200, 200)
    if mode in ("RGBA", "LA"):
        assert out.getpixel((10, 10)) == (10, 200, 30)  # alpha composited on the recipe's background
    if mode == "I;16":
        assert np.asarray(out).max() > 200  # 16-bit scaled to 8-bit, not clipped to black


def test_max_side_shrinks(tmp_path):
    p = _jpeg(tmp_path / "big.jpg", photo("chelsea"))
    _, _, im = clean_one(p, DatasetSpec(min_size=32, max_side=100))
    assert max(im.size) == 100


def test_clean_files_dedups_and_keeps_raw_untouched(tmp_path, bad_files):
    a = save_crops(tmp_path / "a", "chelsea", 4, seed=1)
    b = save_crops(tmp_path / "b", "rocket", 3, seed=2)
    dup = tmp_path / "a" / "copy_of_first.jpg"
    dup.write_bytes(a[0].read_bytes())
    near = tmp_path / "a" / "near.jpg"
    Image.open(a[1]).save(near, quality=60)  # same picture, other bytes
    clash = tmp_path / "b" / "cat_in_b.jpg"
    clash.write_bytes(a[2].read_bytes())
    raw = [("a", RawFile(p, "t")) for p in [*a, dup, near, *bad_files.values()]] + [
        ("b", RawFile(p, "t")) for p in [*b, clash]
    ]
    before = {str(p): sha256_file(p) for _, rf in raw for p in [rf.path]}
    recs = clean_files(raw, SPEC, tmp_path / "clean")
    by = {Path(r.raw_path).name: r for r in recs}
    assert by["copy_of_first.jpg"].reason == "exact_duplicate"
    assert by["near.jpg"].reason == "near_duplicate" or by["chelsea_001.jpg"].reason == "near_duplicate"
    assert by["cat_in_b.jpg"].reason == "in_several_classes" and by["chelsea_002.jpg"].reason == "in_several_classes"
    assert by["empty.jpg"].reason == "empty_file" and by["bomb.png"].reason == "decompression_bomb"
    assert len(recs) == len(raw)
    for r in recs:
        assert (r.status == "kept") == (r.reason == "")
        if r.status == "kept":
            with Image.open(tmp_path / "clean" / r.clean_path) as im:
                assert im.mode == "RGB"
    after = {str(p): sha256_file(p) for _, rf in raw for p in [rf.path]}
    assert after == before  # raw files are never modified

    again = clean_files(raw, SPEC, tmp_path / "clean")  # second run: same outcome from the cache
    assert [(r.status, r.reason) for r in again] == [(r.status, r.reason) for r in recs]


def test_near_duplicates_of_equal_size_keep_the_better_file(tmp_path):
    """A q40 recompression and its q95 original: same pixels, same hash cluster; the larger file stays."""
    arr = photo("coffee")[:200, :200]
    good, poor = tmp_path / "b_original.jpg", tmp_path / "a_q40.jpg"
    Image.fromarray(arr).save(good, quality=95)
    Image.fromarray(arr).save(poor, quality=40)
    assert good.stat().st_size > 2 * poor.stat().st_size
    for order in ([poor, good], [good, poor]):
        recs = clean_files(
            [("x", RawFile(p, "t")) for p in order], DatasetSpec(min_size=32), tmp_path / f"clean-{order[0].stem}"
        )
        kept = [Path(r.raw_path).name for r in recs if r.status == "kept"]
        assert kept == ["b_original.jpg"], [(r.raw_path, r.reason) for r in recs]


def test_bomb_warning_never_reaches_the_terminal_from_worker_threads(tmp_path, recwarn):
    from concurrent.futures import ThreadPoolExecutor

    big = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(big)
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda _: clean_one(big, DatasetSpec())[0], range(8)))
    assert out == ["decompression_bomb"] * 8
    assert not [w for w in recwarn if "decompression bomb" in str(w.message).lower()]
