"""The objective over a tuning job's trials, and against each tuned hyperparameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdod.tune.spec import OBJECTIVE


def objective_picture(summary: dict[str, Any], path: Path) -> Path:
    """The objective over the trials (left) and against each tuned hyperparameter, drawn
    with Pillow: one small panel per hyperparameter, failed trials as grey crosses."""
    from PIL import Image, ImageDraw

    trials = summary["TrainingJobSummaries"]
    names = sorted({k for t in trials for k in t["TunedHyperParameters"]})
    w, h, m = 360, 260, 40
    image = Image.new("RGB", (w * (1 + len(names)), h), "white")
    draw = ImageDraw.Draw(image)

    def value(t: dict[str, Any]) -> float | None:
        metric = t.get("FinalHyperParameterTuningJobObjectiveMetric")
        return None if metric is None else float(metric["Value"])

    def panel(i: int, title: str, xs: list[Any]) -> None:
        x0 = i * w
        draw.rectangle([x0 + m, 20, x0 + w - 10, h - m], outline=(0, 0, 0))
        draw.text((x0 + m, 4), title, fill=(0, 0, 0))
        draw.text((x0 + 4, 20), "1.0", fill=(0, 0, 0))
        draw.text((x0 + 4, h - m - 10), "0.0", fill=(0, 0, 0))
        numeric = all(_is_number(x) for x in xs)
        cats = sorted(set(map(str, xs)), key=lambda s: float(s) if numeric else s)
        for t, x in zip(trials, xs, strict=True):
            pos = cats.index(str(x)) / max(1, len(cats) - 1) if len(cats) > 1 else 0.5
            px = x0 + m + 10 + pos * (w - m - 40)
            v = value(t)
            py = (h - m) - (v if v is not None else 0.0) * (h - m - 20)
            if v is None:
                draw.line([px - 4, py - 4, px + 4, py + 4], fill=(160, 160, 160), width=2)
                draw.line([px - 4, py + 4, px + 4, py - 4], fill=(160, 160, 160), width=2)
            else:
                colour = (220, 30, 30) if t.get("EarlyStopped") else (30, 90, 200)
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        if cats and len(cats) <= 6:
            for j, c in enumerate(cats):
                pos = j / max(1, len(cats) - 1) if len(cats) > 1 else 0.5
                draw.text((x0 + m + 4 + pos * (w - m - 40), h - m + 6), c[:8], fill=(0, 0, 0))

    panel(0, f"{OBJECTIVE} by trial (red: early stopped)", list(range(1, len(trials) + 1)))
    for i, name in enumerate(names, start=1):
        xs = [t["TunedHyperParameters"].get(name, "") for t in trials]
        panel(i, f"{OBJECTIVE} vs {name}", xs)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _is_number(x: Any) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True
