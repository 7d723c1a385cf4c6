"""Image sets as DataFrames, from headers only: ``read_images`` and ``inspect_images``.

Pixels are never decoded here (``Image.open`` is lazy and nothing calls ``load()``), so ten
thousand files take seconds. Sizes are reported whatever they are: a 200 MP phone JPEG is a
normal row (it is decoded in JPEG draft mode when encoded); an image that could not be decoded
within ``PIL.Image.MAX_IMAGE_PIXELS`` at any scale (a 400 MP PNG) has its size *and* an
``error``. One consequence: a file cut short after its header (a truncated
JPEG) looks fine here and only fails when it is encoded or shown.

Usage:

    import visionkit as vk
    df = vk.read_images("photos/")           # a folder (recursive), a glob, a path or a list
    df[df.error.notna()]                     # the files that cannot be used, and why
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import ReadImagesWarning, warn
from ..types import ImageCell
from .cells import cell_kind
from .formats import is_not_an_image
from .headers import cell_rows
from .rows import COLUMNS, frame

__all__ = ["COLUMNS", "IMAGE_EXTENSIONS", "ReadImagesWarning", "inspect_images", "read_images"]


# Names that claim an image format. A folder walk decides by content (every file Pillow can open
# gets a row); a file Pillow cannot open still gets a row, with its reason, when its name says it
# is an image (a failed download saved as "photo.jpg"): it is a broken image, not a stray file.
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".gif",
        ".webp",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".ico",
        ".cur",
        ".avif",
        ".avifs",
        ".heic",
        ".heif",
        ".hif",
        ".jp2",
        ".j2k",
        ".jpx",
        ".jpc",
        ".jpf",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".pfm",
        ".tga",
        ".psd",
        ".mpo",
        ".dds",
        ".sgi",
        ".rgb",
        ".rgba",
        ".bw",
        ".qoi",
        ".pcx",
        ".dcx",
        ".icns",
        ".blp",
        ".ras",
        ".xbm",
        ".xpm",
        ".msp",
        ".ftc",
        ".ftu",
        ".pxr",
        ".fits",
        ".fit",
    ]
)
# Object-store listings (``_image_name``) decide by name first: reading every object's leading
# bytes costs a request each. Objects with these extensions are never read there. (Local walks
# decide by content; see IMAGE_EXTENSIONS.)
_NOT_IMAGE_EXTENSIONS = frozenset(
    [
        ".txt",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".md",
        ".rst",
        ".py",
        ".ipynb",
        ".html",
        ".htm",
        ".xml",
        ".yml",
        ".yaml",
        ".toml",
        ".pdf",
        ".zip",
        ".gz",
        ".tar",
        ".bz2",
        ".xz",
        ".parquet",
        ".feather",
        ".pkl",
        ".npy",
        ".npz",
        ".h5",
        ".db",
        ".sqlite",
        ".log",
        ".sh",
        ".js",
        ".css",
        ".svg",
        ".mp4",
        ".mov",
        ".avi",
        ".mkv",
        ".mp3",
        ".wav",
    ]
)
_GLOB_CHARS = re.compile(r"[*?\[]")


def _natural_key(path: str) -> tuple:
    parts = re.split(r"(\d+)", path)
    return ([int(p) if p.isdigit() else p.lower() for p in parts], path)


def _walk(folder: str, recursive: bool) -> list[str]:
    """Every non-hidden file under ``folder`` (following symbolic links, each real folder once,
    so a link back up the tree ends), in natural order: ``img2`` before ``img10``.

    ``os.scandir`` entries say from the directory listing whether a name is a regular file,
    so no file is stat'ed (only symbolic links are followed to see what they point at).
    """
    found: list[str] = []
    seen: set[str] = set()
    stack = [folder]
    while stack:
        top = stack.pop()
        real = os.path.realpath(top)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(top))
        except OSError:  # unreadable, or gone since it was listed: as os.walk skips it
            continue
        for entry in entries:
            # hidden files and folders: .ipynb_checkpoints, .git, macOS ._ resource forks
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if recursive:
                        stack.append(entry.path)
                elif entry.is_file():  # a regular file, or a link to one: not a dangling link
                    found.append(entry.path)
            except OSError:
                continue
    return sorted(found, key=_natural_key)


@dataclass
class _Source:
    """One file to read, and whether it was found by a folder walk or a glob (then a file that
    is not an image is left out) or named on its own (then it always gets a row)."""

    path: str
    found: bool = False


def _expand(item: Any, recursive: bool, *, top: bool) -> list[_Source]:
    """The files one source item stands for: a folder's files, a glob's matches, or itself.

    ``top``: ``item`` is the whole ``source`` (not one entry of a list), so a path that does
    not exist is a ``FileNotFoundError`` rather than a row saying so.
    """
    if cell_kind(item) == "url":
        return [_Source(item)]
    text = os.fspath(item)
    local = os.path.expanduser(text)
    if os.path.isdir(local):
        files = _walk(text, recursive)
        if not files:
            warn(f"read_images: {text!r} holds no files", ReadImagesWarning)
        return [_Source(f, found=True) for f in files]
    if _GLOB_CHARS.search(text) and not os.path.exists(local):
        matches = glob.glob(local, recursive=True)
        files = sorted((m for m in matches if os.path.isfile(m)), key=_natural_key)
        if not files:
            warn(f"read_images: no files match {text!r}", ReadImagesWarning)
        return [_Source(f, found=True) for f in files]
    if top and not os.path.exists(local):
        raise FileNotFoundError(f"read_images: no such file or folder: {text!r}")
    return [_Source(text)]


def _left_out(source: _Source, row: dict[str, Any]) -> bool:
    """A file found by a walk or glob that is not an image: Pillow cannot open it, nothing in
    its bytes names an image format, and its name does not claim one."""
    return (
        source.found
        and is_not_an_image(row["error"])
        and os.path.splitext(source.path)[1].lower() not in IMAGE_EXTENSIONS
    )


def _image_name(name: str) -> bool | None:
    """True/False by extension, None when only the bytes can tell."""
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return True
    return False if ext in _NOT_IMAGE_EXTENSIONS else None


def _expand_remote(
    item: str,
    recursive: bool,
    storage_options: Mapping[str, Any] | None,
    in_list: bool,
    by_name: list[str],
) -> tuple[list[str], dict[str, int | None], set[str]]:
    """A remote source's objects, their sizes, and those only the bytes can call images
    (``by_name`` gets the names left out by their extension, never fetched)."""
    from .remote import list_images, remember_options

    remember_options(item, storage_options)
    found = list_images(
        item,
        recursive=recursive,
        storage_options=storage_options,
        is_image_name=_image_name,
        trust_name=in_list,
        skipped=by_name,
    )
    found.sort(key=lambda pair: _natural_key(pair[0]))
    unsure = {u for u, _ in found if _image_name(u.rsplit("/", 1)[-1]) is None}
    return [u for u, _ in found], dict(found), unsure if len(found) > 1 else set()


@dataclass
class Listing:
    """What ``read_images`` will read, listed but not yet read: ``read_listing(listing[a:b])``
    reads a slice, so a listing can be split into partitions (``visionkit.dask``)."""

    sources: list[_Source]
    sizes: dict[str, int | None]
    unsure: set[str]  # remote objects only their bytes can call images
    by_name: list[str] = field(default_factory=list)  # remote names left out by extension

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, part: slice) -> Listing:
        sources = self.sources[part]
        paths = {s.path for s in sources}
        return Listing(
            sources,
            {p: n for p, n in self.sizes.items() if p in paths},
            {u for u in self.unsure if u in paths},
        )


def list_sources(
    source: Any, *, recursive: bool = True, storage_options: Mapping[str, Any] | None = None
) -> Listing:
    """``read_images``' first half: expand folders, globs and prefixes into the files to read."""
    top = isinstance(source, (str, os.PathLike))
    if top:
        items: Iterable[Any] = [source]
    elif isinstance(source, (pd.Series, pd.Index)):
        items = source.tolist()
    else:
        items = list(source)
    sources: list[_Source] = []
    sizes: dict[str, int | None] = {}
    unsure: set[str] = set()
    by_name: list[str] = []  # remote objects left out by their extension
    for item in items:
        if cell_kind(item) == "remote":
            urls, found, maybe = _expand_remote(item, recursive, storage_options, not top, by_name)
            sources.extend(_Source(u) for u in urls)
            sizes.update(found)
            unsure |= maybe
        else:
            sources.extend(_expand(item, recursive, top=top))
    return Listing(sources, sizes, unsure, by_name)


def read_listing(
    listing: Listing,
    *,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    """``read_images``' second half: the rows of the listed files (headers only), their
    positions in the listing, and the names of the files left out as not images (a walk's
    non-images, and objects without a telling extension whose bytes are not an image)."""
    rows = cell_rows(
        [s.path for s in listing.sources],
        sizes=listing.sizes,
        storage_options=storage_options,
        concurrency=concurrency,
    )
    kept: list[dict[str, Any]] = []
    positions: list[int] = []
    not_images: list[str] = []
    skipped: list[str] = []
    for i, (s, r) in enumerate(zip(listing.sources, rows, strict=True)):
        if _not_image(r, listing.unsure):
            not_images.append(r["path"].rsplit("/", 1)[-1])
        elif _left_out(s, r):
            skipped.append(os.path.basename(s.path))
        else:
            kept.append(r)
            positions.append(i)
    return kept, positions, not_images + skipped


def _not_image(row: dict[str, Any], unsure: set[str]) -> bool:
    return row["path"] in unsure and row["format"] is None


def read_images(
    source: Any,
    *,
    recursive: bool = True,
    image_column: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    confine_paths: bool = True,
) -> pd.DataFrame:
    """A DataFrame with one row per image file, read from headers only.

    ``source`` is a folder (walked recursively unless ``recursive=False``, following symbolic
    links once; hidden files and folders are skipped), a glob (``"photos/**/*.jpg"``), one
    path or URL, or a list of them (kept in the given order; folders and globs within it are
    expanded in natural order: ``img2`` before ``img10``).

    What a folder walk or glob includes is decided by content: every file Pillow can open gets
    a row, whatever its name (DDS, SGI, QOI, PCX, ICNS, BLP, ... and HEIC/AVIF), and so does a
    broken file whose bytes or name say image (a truncated PNG, text saved as ``.jpg``). Other
    files (notes, CSVs, archives) are left out with one ``ReadImagesWarning`` saying how many
    and which; a file named on its own always gets a row.

    Columns: ``path``, ``format`` (sniffed from the content, not the extension: a PNG named
    ``.jpg`` says "png"), ``width``/``height`` (as displayed, after EXIF orientation),
    ``mode``, ``frames``, ``bytes`` and ``error`` (None, or why the file cannot be used). A bad
    file, or a missing one in a list, is a row with ``error`` set, never an exception for the
    whole call. A ``source`` that does not exist at all raises ``FileNotFoundError``; a folder
    or glob that finds nothing warns (``ReadImagesWarning``) and gives an empty frame.

    Remote sources (``s3://bucket/photos/``, ``gs://.../*.jpg``, ``hf://...``, http(s) URLs;
    see ``visionkit.images.remote``) are listed and only the leading bytes of each object are
    read (``concurrency`` at once, default 32). ``storage_options`` go to fsspec as in pandas,
    and are remembered in memory for the source's prefix so later reads of these cells
    (``encode``, ``ask``, thumbnails) use them too. In a bucket, objects with an image
    extension count as images; those without a known extension count if their bytes say so.

    Tables: ``read_images("data/*.parquet", image_column="image")`` or ``read_images(dataset,
    image_column="image")`` (a Hugging Face ``datasets.Dataset``) read the image column's values
    ({bytes, path} structs, binary or path strings); ``path`` is then a reference such as
    ``data/train.parquet#image[17]`` that every visionkit reader resolves, so the frame never
    copies the images, and the table's other columns come along (see
    ``visionkit.images.tables``). A damaged table named on its own raises ``ValueError``
    naming it; one found by a glob or in a folder is left out with a warning.

    Paths a table names (a path string, or a ``{bytes: null, path}`` struct) are read from
    the table's own folder, never from the working directory: ``img/0.png`` in
    ``s3://b/data/train.parquet`` is ``s3://b/data/img/0.png``. With ``confine_paths=True``
    (the default, for local and remote tables alike: a downloaded table is someone else's) a
    path that leads out of that folder (an absolute path elsewhere, ``..``, a symbolic link
    out of it, another bucket) is that row's error and is never read, so a table cannot make
    visionkit read a private file and send it to a model. http(s) URLs are read wherever they
    point. ``confine_paths=False`` reads paths anywhere, for a table you trust (a manifest
    you wrote listing files elsewhere). A ``datasets.Dataset`` has no folder: its paths are
    taken as they are, as ``datasets`` does.

    >>> df = read_images("datasets/images/")                         # doctest: +SKIP
    >>> df.vision.estimate_tokens().sum()                        # doctest: +SKIP
    """
    from .tables import is_dataset, read_table_images

    if image_column is not None or is_dataset(source):
        return read_table_images(
            source,
            image_column,
            storage_options=storage_options,
            concurrency=concurrency,
            confine_paths=confine_paths,
        )
    listing = list_sources(source, recursive=recursive, storage_options=storage_options)
    by_name = listing.by_name
    if by_name:
        shown = ", ".join(by_name[:5]) + (
            f" and {len(by_name) - 5} more" if len(by_name) > 5 else ""
        )
        warn(
            f"read_images left out {len(by_name)} remote object(s) named like non-images: "
            f"{shown} (objects in a store are judged by extension, not opened)",
            ReadImagesWarning,
        )
    kept, _, skipped = read_listing(
        listing, storage_options=storage_options, concurrency=concurrency
    )
    if skipped:
        shown = ", ".join(skipped[:5])
        shown += f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        many = len(skipped) != 1
        warn(
            f"read_images left out {len(skipped)} file{'s' if many else ''} that "
            f"{'are not images' if many else 'is not an image'}: {shown} (Pillow cannot open "
            f"{'them' if many else 'it'}; name a file on its own to get its row and reason)",
            ReadImagesWarning,
        )
    return frame(kept)


def inspect_images(
    images: pd.Series | Iterable[ImageCell],
    *,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
) -> pd.DataFrame:
    """``read_images``'s columns for any column of image cells (paths, bytes, PIL images,
    data URIs, http(s) and fsspec URLs), with the same index. Headers only: of a URL only the
    leading bytes are read, ``concurrency`` at once (default 32).
    """
    series = images if isinstance(images, pd.Series) else pd.Series(list(images), dtype=object)
    cells = series.tolist()
    rows = cell_rows(cells, storage_options=storage_options, concurrency=concurrency)
    return frame(rows, index=series.index)
