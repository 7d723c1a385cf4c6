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
  the capturing thread; outside ``capture()`` it prints ``module: message.`` to
  ``sys.stderr``, as libtiff would. This needs the libtiff symbols to be reachable from
  Pillow's ``_imaging`` extension (true for Pillow's Linux and macOS wheels and for builds
  against a system libtiff); where they are not (Windows wheels link libtiff statically),
  libtiff's messages still print, and everything else works the same.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import sys
import threading
import warnings
from collections.abc import Iterator

from PIL import Image

__all__ = ["WARNINGS_LOCK", "capture"]

_local = threading.local()
# ``warnings.catch_warnings`` is process-global before Python 3.14: whoever enters one, and
# whoever swaps ``warnings.showwarning``, holds this lock (the few lines that do are cheap).
WARNINGS_LOCK = threading.Lock()
_libtiff_done = False
_keep: list[object] = []  # ctypes callbacks must outlive every call into them


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
    _install()
    sink: list[str] = []
    sinks = _sinks()
    sinks.append(sink)
    try:
        yield sink
    finally:
        sinks.remove(sink)


def _install() -> None:
    global _libtiff_done
    if getattr(warnings.showwarning, "_visionkit", False) and _libtiff_done:
        return
    with WARNINGS_LOCK:
        current = warnings.showwarning
        if not getattr(current, "_visionkit", False):
            warnings.showwarning = _make_hook(current)
        if not _libtiff_done:
            _libtiff_done = True
            _install_libtiff_handler()


def _make_hook(previous):  # type: ignore[no-untyped-def]
    def showwarning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, Image.DecompressionBombWarning) and _sinks():
            return
        if not _note(f"{category.__name__}: {message}"):
            previous(message, category, filename, lineno, file, line)

    showwarning._visionkit = True
    return showwarning


_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


def _install_libtiff_handler() -> None:
    """Route libtiff's global error messages through ``_note`` (see the module docs)."""
    try:
        from PIL import _imaging

        lib = ctypes.CDLL(_imaging.__file__)
        set_handler = lib.TIFFSetErrorHandler
        # the C library is already loaded: CDLL(None) finds it at once (find_library("c") would
        # run ldconfig or a compiler in a subprocess, a third of a second)
        vsnprintf = ctypes.CDLL(None).vsnprintf
    except (AttributeError, OSError, ImportError):
        return  # libtiff not reachable: its messages keep going to stderr
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

    callback = _HANDLER(handler)
    _keep.append(callback)
    set_handler.argtypes = [ctypes.c_void_p]
    set_handler.restype = ctypes.c_void_p
    previous = set_handler(ctypes.cast(callback, ctypes.c_void_p))
    # Hand libtiff its old handler back before the interpreter (and the callback) goes away.
    atexit.register(set_handler, previous)
