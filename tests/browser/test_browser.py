"""The widgets in a real browser: JupyterLab on 127.0.0.1, driven by Debian's headless Chromium.

One JupyterLab server and one notebook (an Annotator saving to a file, and a Gallery of the
sample photos) serve both tests. Skipped when /usr/bin/chromium or Playwright is missing,
except when the ``CI`` environment variable is set: there they fail, because ``.ci/run``
installs Chromium. Screenshots go to ``$VK_SCREENSHOTS`` (default: a pytest temp dir).

Playwright's own browser download is not reachable here, so the test launches the system
Chromium through ``executable_path``.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPTIONS = ["animal", "person", "object"]


def _require_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        missing.append("jupyterlab")
    if missing:
        reason = "browser tests need " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, and .ci/run should have installed them")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last is not None and last is not False:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _exif_photo(path: Path) -> None:
    """A 1800x1200 JPEG stored sideways (EXIF orientation 6): shown upright as 1200x1800."""
    stored = Image.new("RGB", (1800, 1200), (70, 110, 160))
    stored.paste((230, 200, 40), (1700, 0, 1800, 100))  # a mark: bottom right once upright
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", exif=exif, quality=90)


def _notebook(path: Path, save: Path) -> None:
    cells = [
        f"""import sys
sys.path.insert(0, {str(ROOT)!r})  # this checkout's visionkit
from pathlib import Path
import visionkit as vk
images = vk.read_images({str(ROOT / "datasets" / "images")!r})
images = images[images["error"].isna()].sort_values("path").reset_index(drop=True)
images["name"] = images["path"].map(lambda p: Path(p).name)
images["answer"] = 'an animal, probably'""",
        f"""ann = vk.Annotator(images.head(6).copy(), labels={OPTIONS!r}, save={str(save)!r},
                   suggestions="answer", annotator="ana")
ann""",
        """gallery = vk.Gallery(images, caption="name", page_size=8, thumb_size=140)
gallery""",
        f"""import pandas as pd
photos = pd.DataFrame({{"path": [{str(save.parent / "sideways.jpg")!r}]}})
boxes = vk.BoxAnnotator(photos, box_column="boxes", labels=["cat", "dog"], annotator="ana",
                        save={str(save.parent / "boxes.csv")!r}, view_size=400)
boxes""",
    ]
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("VK_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict]:
    """A JupyterLab server on a free port of 127.0.0.1 with a random token; killed at the end."""
    _require_browser()
    root = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("jupyter-home")
    save = root / "labels.csv"
    _exif_photo(root / "sideways.jpg")
    _notebook(root / "widgets.ipynb", save)
    config = home / "config"
    config.mkdir()
    # No "would you like to get notified about Jupyter news?" toast over the widgets.
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    # Nothing may reach the internet: no news feed, no update check, no PyPI extension manager.
    (config / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "LabApp": {
                    "news_url": None,
                    "check_for_updates_class": (
                        "jupyterlab.handlers.announcements.NeverCheckForUpdate"
                    ),
                    "extension_manager": "readonly",
                }
            }
        )
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",  # CI containers run as root
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
    ]
    log = open(home / "lab.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited: {(home / 'lab.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        _wait_until(ready, 60, "JupyterLab to start")
        yield {"base": base, "token": token, "root": root, "save": save, "log": home / "lab.log"}
    finally:
        # The kernel runs in the server's process group: end them together.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _run_notebook(pg, lab) -> None:
    pg.goto(f"{lab['base']}/lab/tree/widgets.ipynb?token={lab['token']}")
    pg.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=45_000)
    # Wait for the kernel so the first Shift+Enter is not lost to a "select kernel" step.
    pg.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=45_000)
    pg.wait_for_selector("text=Python 3 (ipykernel) | Idle", timeout=45_000)
    cells = pg.locator(".jp-CodeCell")
    for i in range(cells.count()):  # run each cell with Shift+Enter, as a user would
        cells.nth(i).locator(".cm-content").click()
        pg.keyboard.press("Shift+Enter")
        prompt = cells.nth(i).locator(".jp-InputArea-prompt")
        _wait_until(
            lambda p=prompt: re.fullmatch(r"\[\d+\]:", p.inner_text().strip()),
            45,
            f"cell {i} to run",
        )
    pg.wait_for_selector(".vk-annotator-view img.vk-ann-image[src]", timeout=45_000)
    pg.wait_for_selector(".vk-gallery .vk-tile img", timeout=45_000)
    pg.wait_for_selector(".vk-box-view img.vk-box-image[src]", timeout=45_000)


@pytest.fixture(scope="module")
def page(lab, shots) -> Iterator[object]:
    """The notebook open in headless Chromium, with all three cells run (Shift+Enter)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            context.set_default_timeout(30_000)
            pg = context.new_page()
            errors: list[str] = []
            console: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            pg.console_errors = console  # type: ignore[attr-defined]
            try:
                _run_notebook(pg, lab)
            except Exception:
                pg.screenshot(path=str(shots / "failure.png"))
                print(lab["log"].read_text()[-3000:], "\n".join(errors), sep="\n")
                raise
            pg.errors = errors  # type: ignore[attr-defined]
            yield pg
        finally:
            browser.close()


def _saved(save: Path) -> pd.DataFrame | None:
    if not save.exists():
        return None
    return pd.read_csv(save, dtype=str, keep_default_na=False)


def _label(save: Path, index: str) -> str | None:
    saved = _saved(save)
    if saved is None:
        return None
    row = saved[(saved["index"] == index) & (saved["annotator"] == "ana")]
    return row["label"].iloc[0] if len(row) else None


def _progress_says(view, text: str) -> None:
    _wait_until(lambda: text in view.locator(".vk-ann-progress").inner_text(), 10, text)


def test_annotator_takes_keys_only_after_a_click_and_never_with_modifiers(page, lab, shots):
    save = lab["save"]
    view = page.locator(".vk-annotator .vk-annotator-view")
    widget = page.locator(".vk-annotator")
    badge = view.locator(".vk-keys-badge")
    assert view.locator("img.vk-ann-image").evaluate("i => i.complete && i.naturalWidth > 0")
    assert "ana: 0 / 6 labelled" in view.locator(".vk-ann-progress").inner_text()
    assert badge.inner_text().startswith("keys: off")
    widget.screenshot(path=str(shots / "annotator-before.png"))
    cells = page.locator(".jp-Cell").count()  # Shift+Enter on the last cell added one

    # After "Run All" the notebook has the keyboard: Enter (JupyterLab's "edit cell") and the
    # arrows must not label an image nobody looked at.
    page.keyboard.press("Escape")
    for k in ("Enter", "Escape", "ArrowRight", "Enter", "Escape"):
        page.keyboard.press(k)
    # Focus reached without a click (tabbing, a script, the old autofocus) is not enough.
    view.evaluate("v => v.parentElement.focus()")
    page.keyboard.press("Enter")
    page.wait_for_timeout(1500)
    assert not save.exists(), "a key labelled an image before anyone clicked the Annotator"
    assert "0 / 6 labelled" in view.locator(".vk-ann-progress").inner_text()

    # A click on the image gives it the keys, and shows it.
    view.locator(".vk-ann-stage").click()
    _wait_until(lambda: badge.inner_text().startswith("keys: on"), 5, "the keys-on badge")
    assert "vk-keys-on" in (widget.get_attribute("class") or "")
    border = widget.evaluate("w => getComputedStyle(w).borderTopColor")
    assert border == "rgb(21, 101, 192)", border
    widget.screenshot(path=str(shots / "annotator-keys-on.png"))
    # Keys with modifiers are never taken (Shift+Enter is tried at the end).
    for k in ("Shift+2", "Shift+a", "Shift+s", "Shift+Backspace"):
        page.keyboard.press(k)
    page.wait_for_timeout(1500)
    assert not save.exists(), "a key with a modifier labelled an image"
    assert badge.inner_text().startswith("keys: on")
    assert page.locator(".jp-MarkdownCell").count() == 0  # nor reached JupyterLab's shortcuts

    page.keyboard.press("Enter")  # accept the model's answer for row 1
    _wait_until(lambda: _label(save, "0") == "animal", 15, "the accepted answer in the file")
    _wait_until(
        lambda: "row 1 (0) labelled 'animal'" in view.locator(".vk-ann-message").inner_text(),
        10,
        "the confirmation",
    )
    _progress_says(view, "1 / 6 labelled · row 2 of 6")

    page.get_by_role("button", name="person [2]").click()  # click a label button
    _wait_until(lambda: _label(save, "1") == "person", 15, "the clicked label in the file")
    page.keyboard.press("3")  # focus is on the button, inside the Annotator
    _wait_until(lambda: _label(save, "2") == "object", 15, "the key-pressed label in the file")
    assert list(_saved(save).columns) == ["index", "path", "annotator", "label", "label_at"]
    _progress_says(view, "3 / 6 labelled")
    # The keys went to the Annotator, not to JupyterLab (where "3" makes a heading).
    assert page.locator(".jp-MarkdownCell").count() == 0
    assert page.locator(".jp-Cell").count() == cells
    page.keyboard.press("Backspace")  # undo the key-pressed label
    _wait_until(lambda: _label(save, "2") == "", 15, "undo in the save file")
    page.keyboard.press("1")
    _wait_until(lambda: _label(save, "2") == "animal", 15, "relabel after undo")

    # Click elsewhere: the Annotator lets go of the keys.
    page.locator(".jp-Cell").first.locator(".jp-InputPrompt").click()
    _wait_until(lambda: badge.inner_text().startswith("keys: off"), 5, "the keys-off badge")
    before = _saved(save)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.wait_for_timeout(1000)
    assert _saved(save).equals(before)
    widget.screenshot(path=str(shots / "annotator-after.png"))
    # Shift+Enter with the keys on runs the cell (JupyterLab's), and never accepts an answer.
    view.locator(".vk-ann-stage").click()
    _wait_until(lambda: badge.inner_text().startswith("keys: on"), 5, "the keys-on badge")
    page.keyboard.press("Shift+Enter")
    page.wait_for_timeout(2000)
    assert _saved(save).equals(before), "Shift+Enter labelled an image"
    assert not page.errors  # type: ignore[attr-defined]


def test_annotator_controls_stay_put_between_images(page):
    # Images of different heights must not move the buttons a mouse user aims at.
    widget = page.locator(".vk-annotator")
    view = widget.locator(".vk-annotator-view")
    view.locator(".vk-ann-stage").click()
    button = widget.get_by_role("button", name="next → [→]")
    places = set()
    for _ in range(4):
        box, top = button.bounding_box(), widget.bounding_box()
        places.add((round(box["x"] - top["x"]), round(box["y"] - top["y"])))
        button.click()
        page.wait_for_timeout(400)
    assert len(places) == 1, places
    hint = view.locator(".vk-ann-hint")
    colour = hint.evaluate("h => getComputedStyle(h).color")
    assert colour in ("rgb(51, 51, 51)", "rgba(0, 0, 0, 0.87)") or "0, 0, 0" in colour, colour


def _variance(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).std())


def test_gallery_thumbnails_render_and_select(page, shots):
    gallery = page.locator(".vk-gallery")
    grid = gallery.locator(".vk-gallery-grid")
    imgs = grid.locator(".vk-tile img")
    _wait_until(
        lambda: imgs.evaluate_all("els => els.every(i => i.complete && i.naturalWidth > 0)"),
        15,
        "thumbnails to load",
    )
    assert imgs.count() == 8
    widths = imgs.evaluate_all("els => els.map(i => i.naturalWidth)")
    assert all(0 < w <= 140 for w in widths)
    shot = grid.screenshot(path=str(shots / "gallery-page1.png"))
    assert _variance(shot) > 20, "the grid screenshot is (nearly) blank"
    first_names = grid.locator("figcaption").all_inner_texts()
    # A long name wraps onto a second line instead of being cut at the first (at 140 px).
    long_name = grid.locator("figcaption").nth(2)
    assert long_name.inner_text() == "astronaut_exif_rotated.jpg"
    lines = long_name.evaluate(
        "c => Math.round(c.getBoundingClientRect().height"
        " / parseFloat(getComputedStyle(c).lineHeight))"
    )
    assert lines == 2, lines
    assert long_name.get_attribute("title") == "astronaut_exif_rotated.jpg"

    grid.locator(".vk-tile").nth(2).click()
    grid.locator(".vk-tile").nth(3).click(modifiers=["Control"])
    _wait_until(lambda: grid.locator(".vk-tile.vk-selected").count() == 2, 10, "selection")
    assert "2 selected" in gallery.locator(".vk-gallery-counts").inner_text()
    gallery.screenshot(path=str(shots / "gallery-selected.png"))

    gallery.get_by_role("button", name="›").click()
    _wait_until(
        lambda: "page 2 /" in gallery.locator(".vk-gallery-page").inner_text(), 15, "page 2"
    )
    _wait_until(
        lambda: (
            grid.locator("figcaption").all_inner_texts() != first_names
            and imgs.evaluate_all("els => els.length > 0 && els.every(i => i.naturalWidth > 0)")
        ),
        15,
        "page 2 thumbnails",
    )
    assert _variance(grid.screenshot(path=str(shots / "gallery-page2.png"))) > 20

    box = gallery.locator(".vk-gallery-query")
    box.fill("width > 600")
    box.press("Enter")
    _wait_until(
        lambda: " of " in gallery.locator(".vk-gallery-counts").inner_text(),
        15,
        "the filter to apply",
    )
    assert page.locator(".jp-MarkdownCell").count() == 0  # typing did not trigger shortcuts
    # The selected tiles on page 1 are not shown under this filter: counted apart.
    counts = gallery.locator(".vk-gallery-counts").inner_text()
    assert "1 selected · 1 selected but hidden by the filter" in counts, counts
    assert not page.errors  # type: ignore[attr-defined]
    missing = [m for m in page.console_errors if "ERR_FILE_NOT_FOUND" in m]  # type: ignore[attr-defined]
    assert not missing, missing


def _screen_point(canvas, x: float, y: float, natural: tuple[int, int]) -> tuple[float, float]:
    """Where the full-size image pixel (x, y) is on the screen, from the canvas' own rect."""
    r = canvas.bounding_box()
    return r["x"] + x * r["width"] / natural[0], r["y"] + y * r["height"] / natural[1]


def _drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for k in range(1, 6):  # several moves, as a hand makes
        t = k / 5
        page.mouse.move(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
    page.mouse.up()


def _saved_boxes(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return json.loads(frame["boxes"].iloc[0]) if len(frame) and frame["boxes"].iloc[0] else None


def test_box_drawn_with_the_mouse_is_saved_in_original_pixels(page, lab, shots):
    save = lab["root"] / "boxes.csv"
    widget = page.locator(".vk-box-annotator")
    widget.scroll_into_view_if_needed()
    view = widget.locator(".vk-box-view")
    image = view.locator("img.vk-box-image")
    canvas = view.locator(".vk-box-canvas")
    _wait_until(lambda: image.evaluate("i => i.complete && i.naturalWidth > 0"), 15, "preview")
    # The preview is upright (EXIF applied) and smaller than the photo; shown smaller still.
    nw, nh = image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert nh > nw and max(nw, nh) <= 1600 and abs(nw / nh - 1200 / 1800) < 0.01
    shown = canvas.bounding_box()
    assert abs(shown["height"] - 400) < 2 and abs(shown["width"] - 400 * 1200 / 1800) < 2
    assert "1200×1800" in view.locator(".vk-ann-title").inner_text()
    natural = (1200, 1800)

    # Before a click the keys do nothing; the first mouse press gives them.
    page.keyboard.press("2")
    assert view.locator(".vk-box-chip.vk-on").inner_text() == "1 cat"
    start = _screen_point(canvas, 300, 450, natural)
    end = _screen_point(canvas, 900, 1350, natural)
    _drag(page, start, end)
    boxes = _wait_until(lambda: _saved_boxes(save), 15, "the drawn box in the save file")
    (box,) = boxes
    tolerance = 1800 / 400 + 0.5  # one screen pixel, in image pixels
    assert box["label"] == "cat"
    for k, want in {"x": 300, "y": 450, "w": 600, "h": 900}.items():
        assert abs(box[k] - want) <= tolerance, (k, box)
    assert view.locator(".vk-keys-badge").inner_text().startswith("keys: on")
    view.screenshot(path=str(shots / "boxes-drawn.png"))

    # The selected box takes a class from a key; zoomed in, a second box still lands in
    # original pixels.
    page.keyboard.press("2")
    _wait_until(lambda: _saved_boxes(save)[0]["label"] == "dog", 15, "the relabelled box")
    page.keyboard.press("+")
    page.keyboard.press("+")
    _wait_until(lambda: "zoom" in view.locator(".vk-box-zoom").inner_text(), 5, "zoom")
    zoomed = canvas.bounding_box()
    assert zoomed["height"] > 600
    stage = view.locator(".vk-box-stage").bounding_box()
    # a box of 60 x 60 image pixels left of the first box, half way down the part in view
    top, bottom = (
        max(stage["y"], zoomed["y"]),
        min(stage["y"] + stage["height"], zoomed["y"] + zoomed["height"]),
    )
    cx = 150
    cy = ((top + bottom) / 2 - zoomed["y"]) * 1800 / zoomed["height"]
    _drag(
        page,
        _screen_point(canvas, cx - 30, cy - 30, natural),
        _screen_point(canvas, cx + 30, cy + 30, natural),
    )
    boxes = _wait_until(
        lambda: b if (b := _saved_boxes(save)) and len(b) == 2 else None, 15, "the second box"
    )
    second = boxes[1]
    fine = 1800 / zoomed["height"] + 0.5
    assert second["label"] == "dog"
    assert abs(second["x"] - (cx - 30)) <= fine and abs(second["w"] - 60) <= 2 * fine, second
    view.screenshot(path=str(shots / "boxes-zoomed.png"))
    page.keyboard.press("Backspace")  # undo
    _wait_until(lambda: len(_saved_boxes(save)) == 1, 15, "undo in the file")
    assert not page.errors  # type: ignore[attr-defined]
