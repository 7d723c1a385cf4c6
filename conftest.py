"""Test-session setup shared by tests/ and the nbval-run notebooks/.

Tests never reach the internet and never touch the user's answer cache: provider keys are
removed from the environment (so ``vk.connect()`` picks the offline stand-in, in the notebooks'
kernels too) and ``VISIONKIT_CACHE_DIR`` points at a fresh temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

PROVIDER_KEYS = ("INFERENCE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def pytest_configure(config: pytest.Config) -> None:
    for name in PROVIDER_KEYS:
        os.environ.pop(name, None)
    cache = tempfile.mkdtemp(prefix="visionkit-test-cache-")
    os.environ["VISIONKIT_CACHE_DIR"] = cache
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    # distributed warns (UserWarning, on the notebook kernel's stderr) when a LocalCluster's
    # scratch folders take over 1 s to create -- they do when the full suite loads the machine,
    # and nbval then fails tutorial 09's first cell on an unexpected stderr output. A user on a
    # loaded machine may see it; the tutorial's stored outputs should not depend on it.
    os.environ["PYTHONWARNINGS"] = ",".join(
        filter(
            None,
            [
                os.environ.get("PYTHONWARNINGS"),
                "ignore:Creating scratch directories is taking a surprisingly long time",
            ],
        )
    )
