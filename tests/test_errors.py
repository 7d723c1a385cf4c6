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
    for name in ["ImageError", "RequestError", "RowError", "BudgetExceeded", "MissingAPIKey"]:
        assert issubclass(getattr(vk, name), vk.VisionError)
    assert issubclass(vk.BudgetExceeded, RuntimeError) and issubclass(
        vk.MissingAPIKey, RuntimeError
    )
