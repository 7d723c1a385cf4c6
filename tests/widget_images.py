"""Small image sets made with Pillow for the widget tests (no dependency on datasets/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

PALETTE = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 180, 30), (130, 60, 160)]


def image_frame(folder: Path, n: int = 12, *, labels: list | None = None) -> pd.DataFrame:
    """``n`` PNGs of different sizes and colours, as a DataFrame with path/width/height/answer.

    ``answer`` alternates "Cat." / "a dog" / "bird" so suggestions and agreement have work.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    answers = ["Cat.", "a dog", "bird"]
    for i in range(n):
        w, h = 120 + 10 * i, 80 + 5 * (i % 4)
        im = Image.new("RGB", (w, h), PALETTE[i % len(PALETTE)])
        im.paste((255, 255, 255), (0, 0, w // 3, h // 3))  # a white corner: not a flat image
        path = folder / f"img{i:03d}.png"
        im.save(path)
        rows.append({"path": str(path), "width": w, "height": h, "answer": answers[i % 3]})
    df = pd.DataFrame(rows, index=pd.Index([f"r{i}" for i in range(n)], name="id"))
    if labels is not None:
        df["label"] = labels
    return df
