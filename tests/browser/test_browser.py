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


def _notebook(path: Path, save: Path) -> None:
    cells = [
        f"""import sys
sys.path.insert(0, {str(ROOT)!r})  # this checkout's visionkit
from pathlib import Path
import visionkit as vk
images = vk.read_images({str(ROOT / "datasets")!r})
images = images[images["error"].isna()].sort_values("path").reset_index(drop=True)
images["name"] = images["path"].map(lambda p: Path(p).name)""",
        f"""ann = vk.Annotator(images.head(6).copy(), "label", {OPTIONS!r}, save={str(save)!r})
ann""",
        """gallery = vk.Gallery(images, caption="name", page_size=8, thumb_size=140)
gallery""",
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
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
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


def test_annotator_button_and_number_key_reach_the_save_file(page, lab, shots):
    save = lab["save"]
    view = page.locator(".vk-annotator-view")
    assert view.locator("img.vk-ann-image").evaluate("i => i.complete && i.naturalWidth > 0")
    assert "0 / 6 labelled" in view.locator(".vk-ann-progress").inner_text()
    page.locator(".vk-annotator").screenshot(path=str(shots / "annotator-before.png"))
    cells = page.locator(".jp-Cell").count()  # Shift+Enter on the last cell added one

    page.get_by_role("button", name="person [2]").click()  # click a label button
    first = _wait_until(
        lambda: s if (s := _saved(save)) is not None and s["label"].iloc[0] == "person" else None,
        15,
        "the clicked label in the save file",
    )
    assert first["label"].iloc[1] == ""
    _wait_until(
        lambda: "1 / 6 labelled" in view.locator(".vk-ann-progress").inner_text(),
        10,
        "the progress line",
    )
    page.keyboard.press("3")  # focus is on the button, inside the Annotator
    saved = _wait_until(
        lambda: s if (s := _saved(save)) is not None and s["label"].iloc[1] == "object" else None,
        15,
        "the key-pressed label in the save file",
    )
    assert saved["label"].tolist()[:3] == ["person", "object", ""]
    assert list(saved.columns) == ["index", "path", "label"]
    _wait_until(
        lambda: "2 / 6 labelled" in view.locator(".vk-ann-progress").inner_text(),
        10,
        "the progress line",
    )
    # The key went to the Annotator, not to JupyterLab (where "3" turns a cell into a heading).
    assert page.locator(".jp-MarkdownCell").count() == 0
    assert page.locator(".jp-Cell").count() == cells
    page.keyboard.press("Backspace")  # undo the key-pressed label
    _wait_until(lambda: _saved(save)["label"].iloc[1] == "", 15, "undo in the save file")
    page.keyboard.press("1")
    _wait_until(lambda: _saved(save)["label"].iloc[1] == "animal", 15, "relabel after undo")
    page.locator(".vk-annotator").screenshot(path=str(shots / "annotator-after.png"))
    assert not page.errors  # type: ignore[attr-defined]


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

    grid.locator(".vk-tile").nth(2).click()
    grid.locator(".vk-tile").nth(4).click(modifiers=["Control"])
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
    assert not page.errors  # type: ignore[attr-defined]
