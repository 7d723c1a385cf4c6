"""What Pillow and libtiff *say* while reading an image, captured per thread instead of printed.

Pillow reports oddities it works around with Python warnings ("Corrupt EXIF data", "Invalid
APNG, will use default PNG image if possible", "Image was not the expected size"), and the libtiff
bundled with it prints its errors straight to the C ``stderr`` ("tempfile.tif: Using code not yet
in table."), which neither ``warnings`` nor ``contextlib.redirect_stderr`` can catch. Inside
``capture()`` both go to a list belonging to the current thread: ``pil_errors`` adds them to a
failing row's reason, and nothing reaches the terminal or the notebook.

Why not the obvious tools:

- ``warnings.catch_warnings()`` swaps process-wide state (the filter list and
  ``showwarning``) and is not thread-safe before Python 3.14: ``encode_series`` decodes in a
  thread pool, and serialising decodes under a lock would cost the pool its speed-up. Instead
  ``warnings.showwarning`` is wrapped once: inside ``capture()`` a warning goes to this thread's
  list, anywhere else it goes on to whatever showed warnings before (so the user's own
  warnings, other threads and pytest's recording are untouched). The user's filters still
  decide first: a warning filtered as "error" raises inside Pillow and becomes the row's error;
  one already shown once at that place ("default") is not seen again.
- Redirecting file descriptor 2 around a decode is not thread-safe either: fd 2 is shared by
  the whole process, so another thread's output (the progress bar, the user's prints, a second
  decode) would vanish into the capture, and nested redirections from two workers would
  restore each other's descriptors in the wrong order.
- libtiff's global error handler is what Pillow leaves at libtiff's default (Pillow only
  switches the *warning* handler off while it decodes). visionkit replaces it, through ctypes,
  with one that formats the message (``vsnprintf`` on libtiff's ``va_list``) and hands it to
  the capturing thread; a message from another thread is printed ``module: message.`` to
  ``sys.stderr``, as libtiff would. This needs the libtiff symbols to be reachable from
  Pillow's ``_imaging`` extension (true for Pillow's Linux and macOS wheels and for builds
  against a system libtiff); where they are not (Windows wheels link libtiff statically),
  libtiff's messages still print, and everything else works the same.

Both hooks are scoped: the first ``capture()`` to open (in any thread) installs them and the
last one to close puts back what was there before, so between calls nothing of visionkit's is
installed (``installed()`` says what is, for ``vk.state()``). A pass over many images holds
them for its whole length (``holding()``): installing and removing them around every decode
(the pool's threads take turns, so the count of open captures keeps falling to 0) cost more
than decoding a small image. A ``showwarning`` someone else
installed on top of ours in the meantime is left alone (ours, under it, passes everything on).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from PIL import Image

from .._state import register

__all__ = ["WARNINGS_LOCK", "capture", "holding", "installed"]

_local = threading.local()
# ``warnings.catch_warnings`` is process-global before Python 3.14: whoever enters one, and
# whoever swaps ``warnings.showwarning``, holds this lock (the few lines that do are cheap).
WARNINGS_LOCK = threading.Lock()
_open = 0  # captures open in every thread; the hooks are installed while it is above 0
_previous_showwarning: object = None  # what showed warnings before ours
_libtiff: _LibtiffHook | None = None  # found once; None until the first capture


def _sinks() -> list[list[str]]:
    sinks = getattr(_local, "sinks", None)
    if sinks is None:
        sinks = _local.sinks = []
    return sinks


def _note(text: str) -> bool:
    """Give ``text`` to this thread's open captures; False when none is open."""
    sinks = _sinks()
    for sink in sinks:
        if text not in sink:
            sink.append(text)
    return bool(sinks)


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect Pillow's warnings and libtiff's messages raised in this thread into a list.

    Nested captures each get every message. Warnings Pillow raises about decompression bombs
    are not collected: ``visionkit.images.bombs`` decides about sizes itself.
    """
    _enter()
    sink: list[str] = []
    sinks = _sinks()
    sinks.append(sink)
    try:
        yield sink
    finally:
        sinks.remove(sink)
        _leave()


@contextlib.contextmanager
def holding() -> Iterator[None]:
    """Keep the hooks installed while the block runs (a pass of many decodes in a thread
    pool); the captures inside it work as ever, and nothing is collected outside them."""
    _enter()
    try:
        yield
    finally:
        _leave()


def installed() -> list[str]:
    """The hooks installed now: ``"warnings.showwarning"`` and ``"libtiff error handler"``
    while a capture is open anywhere in the process, none otherwise."""
    with WARNINGS_LOCK:
        out = []
        if getattr(warnings.showwarning, "_visionkit", False):
            out.append("warnings.showwarning")
        if _libtiff is not None and _libtiff.active:
            out.append("libtiff error handler")
        return out


def _enter() -> None:
    global _open, _previous_showwarning, _libtiff
    with WARNINGS_LOCK:
        _open += 1
        if _open > 1:
            return
        current = warnings.showwarning
        if not getattr(current, "_visionkit", False):
            _previous_showwarning = current
            warnings.showwarning = _make_hook(current)
        if _libtiff is None:
            _libtiff = _LibtiffHook.find()
        _libtiff.install()


def _leave() -> None:
    global _open
    with WARNINGS_LOCK:
        _open -= 1
        if _open > 0:
            return
        if getattr(warnings.showwarning, "_visionkit", False):
            warnings.showwarning = _previous_showwarning  # type: ignore[assignment]
        if _libtiff is not None:
            _libtiff.uninstall()


def _make_hook(previous):  # type: ignore[no-untyped-def]
    def showwarning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, Image.DecompressionBombWarning) and _sinks():
            return
        if not _note(f"{category.__name__}: {message}"):
            previous(message, category, filename, lineno, file, line)

    showwarning._visionkit = True
    return showwarning


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


class _LibtiffHook:
    """libtiff's error handler, replaced by ours while captures are open (module docs)."""

    def __init__(self, set_handler: Any = None, callback: Any = None) -> None:
        self._set = set_handler  # None: libtiff not reachable, its messages go to stderr
        self._callback = callback  # kept alive for as long as libtiff may call it
        self._previous: int | None = None
        self.active = False

    @classmethod
    def find(cls) -> _LibtiffHook:
        try:
            from PIL import _imaging

            lib = ctypes.CDLL(_imaging.__file__)
            set_handler = lib.TIFFSetErrorHandler
            # the C library is already loaded: CDLL(None) finds it at once (find_library("c")
            # would run ldconfig or a compiler in a subprocess, a third of a second)
            vsnprintf = ctypes.CDLL(None).vsnprintf
        except (AttributeError, OSError, ImportError):
            return cls()
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        vsnprintf.restype = ctypes.c_int

        def handler(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
            try:
                buf = ctypes.create_string_buffer(1024)
                vsnprintf(buf, len(buf), fmt or b"", args)
                text = buf.value.decode("utf-8", "replace").rstrip(".")
                where = (module or b"").decode("utf-8", "replace")
                # Pillow names the file it hands libtiff "tempfile.tif": not worth repeating
                message = text if where in ("", "tempfile.tif") else f"{where}: {text}"
                if not _note(f"libtiff: {message}"):
                    sys.stderr.write(f"{message}.\n")
            except Exception:  # never let an exception cross back into C
                pass

        set_handler.argtypes = [ctypes.c_void_p]
        set_handler.restype = ctypes.c_void_p
        hook = cls(set_handler, _HANDLER(handler))
        atexit.register(hook.uninstall)  # libtiff's own handler back before the callback dies
        return hook

    @property
    def reachable(self) -> bool:
        """Whether libtiff's handler can be replaced here (see the module docs)."""
        return self._set is not None

    def install(self) -> None:
        if self._set is not None and not self.active:
            self._previous = self._set(ctypes.cast(self._callback, ctypes.c_void_p))
            self.active = True

    def uninstall(self) -> None:
        if self._set is not None and self.active:
            self._set(self._previous)
            self.active = False


def _held_hooks() -> tuple[int, str]:
    hooks = installed()
    return len(hooks), ", ".join(hooks) or "none (installed only while images decode)"


register("hooks", __name__, _held_hooks)
