"""Rebuild the ``datasets/images/`` sample images and ``manifest.csv`` from installed packages.

Usage (from the repository root)::

    pip install scikit-image matplotlib pillow numpy   # build-time only, not visionkit deps
    python datasets/build.py

Every image in ``images/`` is derived from a public-domain / CC0 photograph that ships
*inside* the wheels of scikit-image (``skimage/data/``) and matplotlib
(``mpl-data/sample_data/``). Nothing is downloaded: scikit-image's pooch-fetched images are
never used, only files that are present on disk in the installed package.

The script deletes every image file in ``images/`` (``*.png``, ``*.jpg``, ``*.webp``,
``*.gif``), re-creates the set listed in ``SPECS`` there and rewrites ``manifest.csv`` beside
it. ``README.md``, ``LICENSES.md`` and this script are left alone.

Determinism: all operations use fixed parameters (Pillow LANCZOS resampling, JPEG quality 85
without optimisation passes, WebP quality 85 / method 4, fixed GIF palettes and frame
durations, no timestamps or other variable metadata), so running the script twice gives
byte-identical files with the same library versions. Different Pillow / libjpeg / libwebp /
zlib versions may produce different bytes (pixels of lossy files can differ slightly), but the
file list, formats and dimensions are stable. The files in git were built with Pillow 13.0,
scikit-image 0.26.0 and matplotlib 3.11.2.

Resizing targets span inference.net's token tiers, where the estimate is
``clamp(H/560, 1, 2) * clamp(W/560, 1, 2) * 1601``: small (both sides < 560 px), medium
(longest side 560-1120 px) and large (a side > 1120 px), plus a 2400x300 panorama strip.
"""

from __future__ import annotations

import csv
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"  # the sample set alone, so read_images("datasets/images/") reads clean
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
LANCZOS = Image.Resampling.LANCZOS
JPEG_QUALITY = 85
WEBP_QUALITY = 85
EXIF_ORIENTATION = 0x0112

# ---------------------------------------------------------------------------------------------
# Sources: file inside an installed package, original provenance and licence as documented by
# that package (skimage: the docstring of the matching ``skimage.data`` loader; matplotlib:
# the JPEG comment embedded in the file).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    package: str  # "skimage" or "matplotlib"
    relpath: str  # path inside the installed package
    origin: str  # original author / source as documented
    licence: str

    def path(self) -> Path:
        if self.package == "skimage":
            import skimage

            return Path(skimage.__file__).parent / self.relpath
        import matplotlib

        return Path(matplotlib.get_data_path()) / self.relpath

    def describe(self) -> str:
        if self.package == "skimage":
            where = f"scikit-image: skimage/{self.relpath}"
        else:
            where = f"matplotlib: matplotlib/mpl-data/{self.relpath}"
        return f"{where}; {self.origin}"


SOURCES = {
    "astronaut": Source(
        "skimage",
        "data/astronaut.png",
        "NASA photograph of astronaut Eileen Collins, NASA Great Images (https://flic.kr/p/r9qvLn)",
        "Public domain",
    ),
    "camera": Source(
        "skimage",
        "data/camera.png",
        "photograph by Lav Varshney",
        "CC0-1.0",
    ),
    "chelsea": Source(
        "skimage",
        "data/chelsea.png",
        "Chelsea the cat, photograph by Stefan van der Walt",
        "CC0-1.0",
    ),
    "clock": Source(
        "skimage",
        "data/clock_motion.png",
        "motion-blurred wall clock, photograph by Stefan van der Walt",
        "Public domain",
    ),
    "coffee": Source(
        "skimage",
        "data/coffee.png",
        "coffee cup, photograph by Rachel Michetti, courtesy of Pikolo Espresso Bar",
        "CC0-1.0",
    ),
    "coins": Source(
        "skimage",
        "data/coins.png",
        "Greek coins from Pompeii, Brooklyn Museum Collection "
        "(https://www.brooklynmuseum.org/opencollection/archives/image/51611)",
        "No known copyright restrictions",
    ),
    "brick": Source(
        "skimage",
        "data/brick.png",
        "brick wall, CC0Textures Bricks25 (https://cc0textures.com/view.php?tex=Bricks25), "
        "perspective-corrected, rotated and cropped by scikit-image",
        "CC0-1.0",
    ),
    "grass": Source(
        "skimage",
        "data/grass.png",
        "grass, linolafett on DeviantArt "
        "(https://www.deviantart.com/linolafett/art/Grass-01-434853879), cropped and "
        "converted to grey by scikit-image",
        "CC0-1.0",
    ),
    "gravel": Source(
        "skimage",
        "data/gravel.png",
        "gravel, CC0Textures Gravel04 (https://cc0textures.com/view.php?tex=Gravel04), "
        "rescaled, cropped and converted to grey by scikit-image",
        "CC0-1.0",
    ),
    "hubble": Source(
        "skimage",
        "data/hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field, NASA, HubbleSite release 2012/37 "
        "(http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/)",
        "Public domain",
    ),
    "hopper": Source(
        "matplotlib",
        "sample_data/grace_hopper.jpg",
        "Grace Hopper, U.S. Navy official portrait; embedded JPEG comment: "
        "'File source: http://commons.wikimedia.org/wiki/File:Grace_Hopper.jpg'",
        "Public domain",
    ),
}


def load(name: str) -> Image.Image:
    """Open a source image fully decoded, in RGB (colour sources) or L (grey sources)."""
    with Image.open(SOURCES[name].path()) as im:
        im.load()
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGB")
        return im.copy()


def resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im.resize(size, LANCZOS)


def crop_resize(im: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]):
    """Crop ``box`` (left, upper, right, lower) and resize the crop to ``size`` with LANCZOS."""
    return im.resize(size, LANCZOS, box=box)


# ---------------------------------------------------------------------------------------------
# Writers with fixed parameters.
# ---------------------------------------------------------------------------------------------


def save_png(im: Image.Image, path: Path) -> None:
    im.save(path, "PNG", optimize=False, compress_level=9)


def save_jpeg(im: Image.Image, path: Path, exif: Image.Exif | None = None) -> None:
    kwargs = {
        "quality": JPEG_QUALITY,
        "optimize": False,
        "progressive": False,
        "subsampling": "4:2:0",
    }
    if exif is not None:
        kwargs["exif"] = exif.tobytes()
    im.save(path, "JPEG", **kwargs)


def save_webp(im: Image.Image, path: Path) -> None:
    im.save(path, "WEBP", quality=WEBP_QUALITY, method=4, lossless=False, exact=False)


def to_palette(im: Image.Image) -> Image.Image:
    if im.mode == "L":
        return im.convert("P")  # greyscale palette, exact
    return im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def save_gif(frames: list[Image.Image], path: Path, duration: int = 600) -> None:
    pal = [to_palette(f) for f in frames]
    if len(pal) == 1:
        pal[0].save(path, "GIF", optimize=False)
    else:
        pal[0].save(
            path,
            "GIF",
            save_all=True,
            append_images=pal[1:],
            duration=duration,
            loop=0,
            optimize=False,
            disposal=1,
        )


# ---------------------------------------------------------------------------------------------
# Derived images.
# ---------------------------------------------------------------------------------------------


def soft_vignette_alpha(size: tuple[int, int]) -> Image.Image:
    """An L-mode alpha mask: opaque ellipse in the centre fading to transparent at the edges."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = (x + 0.5 - w / 2) / (w / 2)
    dy = (y + 0.5 - h / 2) / (h / 2)
    r = np.sqrt(dx * dx + dy * dy)
    # fully opaque inside r <= 0.6, fully transparent at r >= 1.0, smoothstep between
    t = np.clip((r - 0.6) / 0.4, 0.0, 1.0)
    alpha = 1.0 - t * t * (3.0 - 2.0 * t)
    return Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L")


def make_exif_rotated(displayed: Image.Image, orientation: int = 6):
    """Return (stored image, Exif) so that exif_transpose(stored) == displayed.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the pixels are stored
    rotated 90 degrees counter-clockwise.
    """
    if orientation != 6:
        raise ValueError("only orientation 6 is implemented")
    stored = displayed.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return stored, exif


@dataclass(frozen=True)
class Spec:
    file: str
    source: str
    label: str
    notes: str
    build: Callable[[Path], None]


def _astronaut_png(p: Path) -> None:
    save_png(load("astronaut"), p)


def _camera_gray_png(p: Path) -> None:
    save_png(load("camera"), p)  # mode L


def _coins_png(p: Path) -> None:
    save_png(load("coins"), p)  # mode L


def _chelsea_vignette_png(p: Path) -> None:
    rgba = resize(load("chelsea"), (900, 599)).convert("RGBA")
    rgba.putalpha(soft_vignette_alpha(rgba.size))
    save_png(rgba, p)


def _brick_png(p: Path) -> None:
    save_png(resize(load("brick"), (700, 700)), p)


def _coins_large_png(p: Path) -> None:
    save_png(resize(load("coins"), (1280, 1010)), p)


def _hopper_jpg(p: Path) -> None:
    # byte-for-byte copy: keeps the original pixels and the embedded provenance comment
    shutil.copyfile(SOURCES["hopper"].path(), p)


def _coffee_jpg(p: Path) -> None:
    save_jpeg(load("coffee"), p)  # native 600x400


def _hubble_jpg(p: Path) -> None:
    save_jpeg(resize(load("hubble"), (1600, 1395)), p)


def _astronaut_exif_jpg(p: Path) -> None:
    displayed = crop_resize(load("astronaut"), (62, 0, 420, 512), (630, 900))
    stored, exif = make_exif_rotated(displayed, 6)
    save_jpeg(stored, p, exif=exif)


def _clock_jpg(p: Path) -> None:
    save_jpeg(load("clock"), p)  # mode L, native 400x300


def _gravel_jpg(p: Path) -> None:
    save_jpeg(crop_resize(load("gravel"), (0, 64, 512, 448), (2000, 1500)), p)


def _chelsea_webp(p: Path) -> None:
    save_webp(resize(load("chelsea"), (1800, 1197)), p)


def _hopper_webp(p: Path) -> None:
    save_webp(resize(load("hopper"), (1400, 1641)), p)


def _hubble_strip_webp(p: Path) -> None:
    save_webp(crop_resize(load("hubble"), (0, 380, 1000, 505), (2400, 300)), p)


def _coffee_cup_webp(p: Path) -> None:
    save_webp(crop_resize(load("coffee"), (160, 0, 460, 400), (360, 480)), p)


def _hubble_crop_webp(p: Path) -> None:
    save_webp(crop_resize(load("hubble"), (500, 0, 1000, 436), (500, 436)), p)


def _grass_webp(p: Path) -> None:
    save_webp(crop_resize(load("grass"), (0, 128, 512, 384), (1000, 500)), p)


def _chelsea_anim_gif(p: Path) -> None:
    im = load("chelsea")  # 451x300
    boxes = [(0, 0, 300, 200), (75, 50, 375, 250), (151, 100, 451, 300)]
    save_gif([crop_resize(im, b, (360, 240)) for b in boxes], p, duration=500)


def _coffee_anim_gif(p: Path) -> None:
    im = load("coffee")  # 600x400
    frames = [resize(im, (720, 480)), crop_resize(im, (150, 0, 450, 200), (720, 480))]
    save_gif(frames, p, duration=800)


def _brick_gif(p: Path) -> None:
    save_gif([resize(load("brick"), (256, 256))], p)


def _astronaut_crop_gif(p: Path) -> None:
    save_gif([crop_resize(load("astronaut"), (120, 0, 330, 294), (300, 420))], p)


ROTATED_NOTE = (
    "EXIF Orientation=6: pixels stored rotated 90deg counter-clockwise (900x630); "
    "displays upright as 630x900 after ImageOps.exif_transpose"
)

SPECS: list[Spec] = [
    # --- PNG
    Spec("astronaut.png", "astronaut", "person", "RGB; unchanged pixels", _astronaut_png),
    Spec(
        "camera_gray.png",
        "camera",
        "person",
        "greyscale (mode L); unchanged pixels",
        _camera_gray_png,
    ),
    Spec("coins_gray.png", "coins", "object", "greyscale (mode L); unchanged pixels", _coins_png),
    Spec(
        "chelsea_vignette.png",
        "chelsea",
        "animal",
        "RGBA with alpha channel: soft elliptical transparent vignette; upscaled",
        _chelsea_vignette_png,
    ),
    Spec(
        "coins_large.png",
        "coins",
        "object",
        "greyscale (mode L); upscaled to the large tier",
        _coins_large_png,
    ),
    Spec("brick_gray.png", "brick", "texture", "greyscale (mode L); upscaled", _brick_png),
    # --- JPEG
    Spec(
        "grace_hopper.jpg",
        "hopper",
        "person",
        "RGB portrait; byte-for-byte copy of the matplotlib file",
        _hopper_jpg,
    ),
    Spec(
        "coffee.jpg", "coffee", "food", "RGB landscape; unchanged size, re-encoded q85", _coffee_jpg
    ),
    Spec(
        "hubble_deep_field.jpg", "hubble", "space", "RGB; upscaled to the large tier", _hubble_jpg
    ),
    Spec(
        "astronaut_exif_rotated.jpg",
        "astronaut",
        "person",
        ROTATED_NOTE + "; cropped and upscaled",
        _astronaut_exif_jpg,
    ),
    Spec(
        "clock_motion_gray.jpg",
        "clock",
        "object",
        "greyscale (mode L) JPEG; motion blur",
        _clock_jpg,
    ),
    Spec("gravel_large.jpg", "gravel", "texture", "greyscale (mode L) JPEG; upscaled", _gravel_jpg),
    # --- WebP
    Spec("chelsea_large.webp", "chelsea", "animal", "RGB landscape; upscaled", _chelsea_webp),
    Spec("grace_hopper_large.webp", "hopper", "person", "RGB portrait; upscaled", _hopper_webp),
    Spec(
        "hubble_strip.webp",
        "hubble",
        "space",
        "extreme aspect ratio 8:1 panorama strip (horizontal band, upscaled)",
        _hubble_strip_webp,
    ),
    Spec(
        "hubble_crop.webp",
        "hubble",
        "space",
        "RGB; top-right quarter of the field, 1:1 pixels",
        _hubble_crop_webp,
    ),
    Spec("coffee_cup_portrait.webp", "coffee", "food", "RGB portrait crop", _coffee_cup_webp),
    Spec(
        "grass_wide.webp",
        "grass",
        "texture",
        "grey source stored as RGB (WebP has no grey mode); 2:1 crop, upscaled",
        _grass_webp,
    ),
    # --- GIF
    Spec(
        "chelsea_anim.gif",
        "chelsea",
        "animal",
        "animated GIF, 3 frames (panning crops of the same photo), 500 ms, loops",
        _chelsea_anim_gif,
    ),
    Spec(
        "coffee_anim.gif",
        "coffee",
        "food",
        "animated GIF, 2 frames (full photo, then zoom on the cup), 800 ms, loops",
        _coffee_anim_gif,
    ),
    Spec(
        "brick_gray.gif",
        "brick",
        "texture",
        "single-frame GIF, greyscale palette; downscaled",
        _brick_gif,
    ),
    Spec(
        "astronaut_crop.gif",
        "astronaut",
        "person",
        "single-frame GIF, 256-colour median-cut palette; portrait crop",
        _astronaut_crop_gif,
    ),
]

MANIFEST_COLUMNS = ["file", "source", "licence", "label", "width", "height", "notes"]


def displayed_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).size


def build(out: Path = IMAGES) -> list[dict[str, str]]:
    """Write the images into ``out`` and ``manifest.csv`` beside that folder."""
    out.mkdir(exist_ok=True)
    for old in sorted(out.iterdir()):
        if old.suffix.lower() in IMAGE_SUFFIXES:
            old.unlink()
    rows = []
    for spec in SPECS:
        path = out / spec.file
        spec.build(path)
        w, h = displayed_size(path)
        src = SOURCES[spec.source]
        rows.append(
            {
                "file": spec.file,
                "source": src.describe(),
                "licence": src.licence,
                "label": spec.label,
                "width": str(w),
                "height": str(h),
                "notes": spec.notes,
            }
        )
    with open(out.parent / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def tokens(w: int, h: int) -> int:
    def clamp(v: float) -> float:
        return min(max(v, 1.0), 2.0)

    return round(clamp(h / 560) * clamp(w / 560) * 1601)


def main() -> int:
    rows = build()
    total = 0
    for r in rows:
        size = (IMAGES / r["file"]).stat().st_size
        total += size
        w, h = int(r["width"]), int(r["height"])
        print(f"{r['file']:28s} {w:5d}x{h:<5d} {size / 1024:8.1f} KiB  ~{tokens(w, h)} tokens")
    print(f"{len(rows)} files, {total / 1024 / 1024:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
