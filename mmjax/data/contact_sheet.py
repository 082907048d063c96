"""A PNG grid of rendered scenes, each titled with its unbiased and its biased caption.

    python -m mmjax.data.contact_sheet [PATH]   # default docs/scenes_contact_sheet.png
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from mmjax.data.scene_dataset import SceneDataConfig, scene_examples
from mmjax.data.scenes import DISCRETE, SceneConfig, caption_strings, caption_tokens

DEFAULT_PATH = Path("docs/scenes_contact_sheet.png")


def contact_sheet(path: str | Path = DEFAULT_PATH, n: int = 12, cfg: SceneConfig | None = None,
                  selected: Sequence[str] = ("colour", "shape", "background"),
                  perturbed: Sequence[str] = ("background",), p_change: float = 0.9, seed: int = 0,
                  columns: int = 4) -> Path:
    """A PNG grid of n scenes titled "unbiased" / "biased" captions, with dropped and changed attributes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is invalid: must be an int >= 1")
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns={columns!r} is invalid: must be an int >= 1")
    cfg = SceneConfig() if cfg is None else cfg
    data = SceneDataConfig(scene=cfg, selected=tuple(selected), perturbed=tuple(perturbed), p_change=p_change,
                           seed=seed, num_train=n, num_test=1)
    key = jax.random.fold_in(jax.random.key(seed), 0)
    ex = {k: np.asarray(v) for k, v in scene_examples(key, 0, n, cfg, data.selected_mask, data.perturbed_mask,
                                                          float(p_change)).items()}
    biased = caption_strings(ex["tokens"], cfg)
    truth, _ = caption_tokens(jax.random.key(0), {k: ex[k] for k in (*DISCRETE, "template")}, cfg,
                              np.ones(len(DISCRETE), np.int32), np.zeros(len(DISCRETE), np.int32), 0.0)
    unbiased = caption_strings(truth, cfg)

    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 4.0 * rows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(ex["image"][i], interpolation="nearest")
        changed = [f for f, c in zip(DISCRETE, ex["changed"][i], strict=True) if c]
        dropped = [f for f, d in zip(DISCRETE, ex["dropped"][i], strict=True) if d]
        lines = [*textwrap.wrap(f"unbiased: {unbiased[i]}", 46), *textwrap.wrap(f"biased: {biased[i]}", 46)]
        notes = [f"{what}: {', '.join(names)}" for what, names in (("dropped", dropped), ("changed", changed))
                 if names]
        if notes:
            lines.append(f"({'; '.join(notes)})")
        ax.set_title("\n".join(lines), fontsize=7, loc="left")
    perturbation = ", ".join(data.perturbed) or "none"
    fig.suptitle(f"Procedural scenes ({cfg.image_size}x{cfg.image_size}): selection "
                 f"{{{', '.join(data.selected)}}}, perturbation {{{perturbation}}} with p={p_change}",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(contact_sheet(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PATH))
