"""How well a per-image hand score tells a hand crop from a crop without a hand (AUROC).

Positives: labelled hand crops (e.g. the val photos of hgc_real). Negatives, four kinds:
- `background_crops`: square windows of the same photos away from the hand (outside its keypoint
  box grown by a margin), as a detector's false boxes would show them;
- `flat_images`: one colour each; `noise_images`: uniform pixel noise and smooth colour noise;
- `render_backgrounds`: the renderer's backgrounds of a style with the hand left out (its clutter
  and skin-coloured distractors included).
Every image is returned at one square size; the scores come from `export.Predictor.predict` on the
whole image as the crop. `auroc` is the Mann-Whitney statistic (ties count half).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hpe_jax.data import render
from hpe_jax.data.styles import Style


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def background_crops(images: np.ndarray, keypoints_2d: np.ndarray, size: int,
                     margin: float = 0.1, min_side: int = 32) -> np.ndarray:
    """(M, size, size, 3) uint8: per photo, the largest square window touching a photo corner
    that stays outside the hand's keypoint box grown by `margin` of its larger side on every
    side; photos without such a window of at least `min_side` px give none.

    images: (N, H, W, 3) uint8; keypoints_2d: (N, 21, 2) pixels of those images."""
    out = []
    for image, uv in zip(images, keypoints_2d, strict=True):
        h, w = image.shape[:2]
        lo, hi = uv.min(0), uv.max(0)
        grow = margin * float(np.max(hi - lo))
        u0, v0 = lo - grow
        u1, v1 = hi + grow
        best = None
        for cu, cv in ((0, 0), (w, 0), (0, h), (w, h)):  # corners
            # Side of the largest square from this corner that avoids the box: it may pass
            # beside the box (left/right) or above/below it.
            room_u = u0 if cu == 0 else w - u1
            room_v = v0 if cv == 0 else h - v1
            side = int(min(max(room_u, room_v), h, w))
            if side >= min_side and (best is None or side > best[0]):
                best = (side, cu, cv)
        if best is None:
            continue
        side, cu, cv = best
        x = 0 if cu == 0 else w - side
        y = 0 if cv == 0 else h - side
        out.append(_resize(np.ascontiguousarray(image[y:y + side, x:x + side]), size))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def flat_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 images of one random colour each."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n, 1, 1, 3))
    return np.broadcast_to(colours, (n, size, size, 3)).astype(np.uint8)


def noise_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: half uniform pixel noise, half smooth colour noise."""
    rng = np.random.default_rng(seed)
    half = n // 2
    pixel = rng.integers(0, 256, (half, size, size, 3))
    smooth = [render.fractal_noise(rng, size, 3) for _ in range(n - half)]
    smooth = np.clip(np.stack(smooth) * 255.0, 0, 255) if smooth else np.zeros((0, size, size,
                                                                                 3))
    return np.concatenate([pixel, smooth]).astype(np.uint8)


def render_backgrounds(style: Style, n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 backgrounds of `style`, rendered at 128 px without the hand."""
    rng = np.random.default_rng(seed)
    out = [np.clip(render.background(rng, style, 128) * 255.0 + 0.5, 0, 255).astype(np.uint8)
           for _ in range(n)]
    return np.stack([_resize(x, size) for x in out])
