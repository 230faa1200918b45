"""What a generated design image shows, measured: plan or room (a logistic regression on six
image features, fitted on procedural images blurred and noised as a small diffusion model's
images are, and checked on held-out ones first), a room's wall colour, a plan's room count.

The seed paper's one qualitative claim, that each task adapter gives its task's kind of image
from one shared base, becomes numbers with these (`spatiora eval`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from spatiora_tui.procedural.scenes import KINDS, WALLS, Kind, samples

FEATURES = ("paper", "ink", "saturation", "diagonal edges", "top minus bottom", "border lightness")
FIT_SEED, HELD_OUT_SEED = 101, 202


def features(image: Image.Image) -> np.ndarray:
    """Six numbers that tell a plan (paper, ink, straight lines, the same all round) from a
    room (colour, perspective diagonals, a bright ceiling over a floor)."""
    rgb = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    top, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(top > 0, (top - low) / np.maximum(top, 1e-6), 0.0)
    grey = rgb.mean(axis=2)
    gy, gx = np.gradient(grey)
    strength = np.hypot(gx, gy)
    strong = strength > 0.08
    angle = np.degrees(np.arctan2(gy, gx)) % 180
    diagonal = ((angle > 22.5) & (angle < 67.5)) | ((angle > 112.5) & (angle < 157.5))
    border = np.concatenate([grey[:3].ravel(), grey[-3:].ravel(), grey[:, :3].ravel(), grey[:, -3:].ravel()])
    return np.array(
        [
            float(((top > 0.85) & (saturation < 0.15)).mean()),
            float((top < 0.25).mean()),
            float(saturation.mean()),
            float((strong & diagonal).sum() / max(1, strong.sum())),
            float(grey[:10].mean() - grey[-10:].mean()),
            float(border.mean()),
        ],
        dtype=np.float64,
    )


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """Blur and noise of the kind a small diffusion model's images have."""
    blurred = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    pixels = np.asarray(blurred, dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(0, 14), pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class KindModel:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def room_probability(self, image: Image.Image) -> float:
        z = (features(image) - self.mean) / self.scale
        return float(1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias))))

    def kind(self, image: Image.Image) -> Kind:
        return "room" if self.room_probability(image) >= 0.5 else "plan"


def _dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    rows, labels = [], []
    for image, _, kind, _ in samples(count, seed):
        rows.append(features(degrade(image, rng)))
        labels.append(1.0 if kind == "room" else 0.0)
    return np.array(rows), np.array(labels)


def fit(count: int = 600, seed: int = FIT_SEED, steps: int = 2000) -> KindModel:
    """Logistic regression by gradient descent on `count` degraded procedural images."""
    x, y = _dataset(count, seed)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    weights, bias = np.zeros(z.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(z @ weights + bias)))
        weights -= 0.5 * (z.T @ (p - y) / len(y) + 1e-3 * weights)
        bias -= 0.5 * float((p - y).mean())
    return KindModel(mean, scale, weights, bias)


@lru_cache(maxsize=1)
def kind_model() -> KindModel:
    """The fitted classifier (the same every time: fixed seeds; about a second to fit)."""
    return fit()


def held_out_accuracy(model: KindModel, count: int = 400, seed: int = HELD_OUT_SEED) -> float:
    """The share of degraded procedural images, never seen in the fit, classified right."""
    x, y = _dataset(count, seed)
    z = (x - model.mean) / model.scale
    predicted = (z @ model.weights + model.bias) >= 0
    return float((predicted == (y == 1)).mean())


# -- what an image shows -------------------------------------------------------------------------


def wall_colour(image: Image.Image) -> str:
    """The named wall colour closest to a room image's walls: the median of a strip of each side
    wall and of the back wall's upper band, each matched lit or shaded, by majority."""
    rgb = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    regions = [rgb[24:44, 1:6], rgb[24:44, 58:63], rgb[20:24, 26:38]]
    votes: dict[str, int] = {}
    for region in regions:
        colour = np.median(region.reshape(-1, 3), axis=0)
        name = min(
            WALLS,
            key=lambda w: min(float(np.sum((colour - np.array(WALLS[w]) * f) ** 2)) for f in (1.0, 0.82, 0.7)),
        )
        votes[name] = votes.get(name, 0) + 1
    return max(votes, key=lambda n: votes[n])


def room_count(image: Image.Image, close: int = 5) -> int:
    """Rooms in a plan: the light regions inside the outer wall once door gaps are closed (a
    morphological closing of the walls, which leaves the rooms their size), not counting
    slivers."""
    grey = np.asarray(image.convert("L").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    wall = _grow(_grow(grey < 110, close), -close)
    free = ~wall
    seen = np.zeros_like(free)
    rooms = 0
    for y0, x0 in zip(*np.nonzero(free)):
        if seen[y0, x0]:
            continue
        stack, size, touches = [(y0, x0)], 0, False
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            size += 1
            touches |= y in (0, 63) or x in (0, 63)
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < 64 and 0 <= nx < 64 and free[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if not touches and size >= 12:
            rooms += 1
    return rooms


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """`mask` dilated by a square of `radius` (eroded for a negative one); outside is empty."""
    r = abs(radius)
    work = mask if radius > 0 else ~mask
    padded = np.pad(work, r, constant_values=radius < 0)
    out = np.zeros_like(work)
    h, w = work.shape
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out if radius > 0 else ~out


__all__ = [
    "FEATURES",
    "KINDS",
    "KindModel",
    "features",
    "fit",
    "held_out_accuracy",
    "kind_model",
    "room_count",
    "wall_colour",
]
