"""Test-session setup shared by tests/ and the nbval-run notebooks/.

Tests never reach the internet and never touch the user's answer cache: provider keys are
removed from the environment (so ``vk.connect()`` picks the offline stand-in, in the notebooks'
kernels too) and ``VISIONKIT_CACHE_DIR`` points at a fresh temporary folder. Ctrl-C is handled
even where the shell that started pytest ignores it (see ``pytest_configure``).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

import pytest

PROVIDER_KEYS = ("INFERENCE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def pytest_configure(config: pytest.Config) -> None:
    # The interrupt tests press Ctrl-C with ``_thread.interrupt_main``, which does nothing while
    # SIGINT is ignored -- and a job a non-interactive shell starts with ``&`` (``land.sh > log
    # &``) inherits it ignored. Handle it as Python does by default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in PROVIDER_KEYS:
        os.environ.pop(name, None)
    cache = tempfile.mkdtemp(prefix="visionkit-test-cache-")
    os.environ["VISIONKIT_CACHE_DIR"] = cache
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
