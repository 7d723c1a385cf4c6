"""The exception tree: one base for a row's failure, and errors that survive pickling."""

from __future__ import annotations

import pickle

import pytest

import visionkit as vk


@pytest.mark.parametrize(
    "error",
    [
        vk.ImageError("truncated JPEG", row="r3", source="photos/a.jpg"),
        vk.RequestError("request body of 1,200,000 bytes is not under 1,000,000", row=7),
        vk.ImageError("file not found"),
    ],
)
def test_a_rows_error_names_the_row_and_survives_pickling(error):
    """Errors cross process boundaries (process pools, Dask workers) with row and reason."""
    assert isinstance(error, vk.RowError) and isinstance(error, ValueError)
    if error.row is not None:
        assert str(error) == f"row {error.row!r}: {error.reason}"
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert (back.row, back.reason) == (error.row, error.reason)
    assert getattr(back, "source", None) == getattr(error, "source", None)


def test_every_visionkit_error_is_a_vision_error():
    from visionkit import errors

    names = [n for n in errors.__all__ if not n.endswith("Warning")]
    assert {"CacheError", "ReplayError", "ImageError", "RequestError", "RowError"} <= set(names)
    for name in names:
        assert issubclass(getattr(vk, name), vk.VisionError)
    assert issubclass(vk.BudgetExceeded, RuntimeError) and issubclass(
        vk.MissingAPIKey, RuntimeError
    )


def test_every_warning_lives_in_errors_and_can_be_filtered_by_its_public_name(tmp_path, recwarn):
    """Users silence a warning by class (``filterwarnings("ignore", category=vk.X)``): every
    warning visionkit emits is one of the classes errors.py lists, all exported as ``vk.X``."""
    import warnings

    from visionkit import errors

    kinds = [n for n in errors.__all__ if n.endswith("Warning")]
    assert set(kinds) == {
        "BatchWarning",
        "CacheWarning",
        "EncodeWarning",
        "OfflineWarning",
        "ReadImagesWarning",
        "ReplayWarning",
    }
    for name in kinds:
        assert getattr(vk, name) is getattr(errors, name) and issubclass(
            getattr(vk, name), UserWarning
        )
    (tmp_path / "notes.txt").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=vk.ReadImagesWarning)
        assert vk.read_images(str(tmp_path)).empty  # warned (and ignored), did not raise
    with pytest.warns(vk.ReadImagesWarning, match="notes.txt"):
        vk.read_images(str(tmp_path))
