"""Procedural design images with their captions: 2D floor plans and one-point-perspective
interiors, drawn with Pillow from one set of random parameters (a Scene), so that a caption's
words are visible in the image it goes with.

Both kinds are drawn from the same Scene and share one caption ("a three-room flat: living room
with oak floor and blue walls, window on the left"): a plan shows the room count, the window's
side and the floor's tint; an interior shows the room type's furniture, the floor, the walls and
the window's side. A model trained on both with those captions cannot tell from the words which
kind to draw; a task adapter trained on one kind can. What the demo model is trained on
(engine/demo_train.py) and what its scorer checks (scorer.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

Kind = Literal["plan", "room"]
KINDS: tuple[Kind, ...] = ("plan", "room")

#: Wall colours by the word a caption uses.
WALLS = {
    "blue": (70, 110, 190),
    "green": (80, 150, 90),
    "red": (180, 60, 55),
    "yellow": (220, 190, 70),
    "white": (235, 235, 230),
    "grey": (140, 140, 145),
    "pink": (225, 150, 170),
    "beige": (215, 195, 160),
}
#: Floor materials: (colour, pattern) by the word a caption uses.
FLOORS = {
    "oak": ((190, 140, 80), "planks"),
    "walnut": ((105, 70, 45), "planks"),
    "marble": ((228, 228, 222), "plain"),
    "tile": ((150, 150, 155), "grid"),
    "terracotta": ((185, 95, 60), "grid"),
    "concrete": ((120, 118, 112), "plain"),
}
ROOM_TYPES = ("living room", "bedroom", "kitchen", "study")
SIDES = ("left", "right", "back")
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
PAPER = (250, 250, 247)
INK = (25, 25, 30)
SKY = (165, 205, 240)

#: Every word a caption can hold, for the demo tokenizer's vocabulary.
CAPTION_WORDS = (
    "a",
    "flat",
    "with",
    "and",
    "floor",
    "walls",
    "window",
    "on",
    "the",
    "room",
    *NUMBERS.values(),
    *(w for t in ROOM_TYPES for w in t.split()),
    *WALLS,
    *FLOORS,
    *SIDES,
)


@dataclass(frozen=True)
class Scene:
    """What one image shows; `caption()` says it in words."""

    rooms: int  # 2-6, a plan's room count
    room_type: str
    floor: str
    wall: str
    window: str  # left | right | back (a plan's back is its top wall)

    def caption(self) -> str:
        return (
            f"a {NUMBERS[self.rooms]}-room flat: {self.room_type} with {self.floor} floor and {self.wall} walls, "
            f"window on the {self.window}"
        )


def random_scene(rng: random.Random) -> Scene:
    return Scene(
        rooms=rng.randint(2, 6),
        room_type=rng.choice(ROOM_TYPES),
        floor=rng.choice(list(FLOORS)),
        wall=rng.choice(list(WALLS)),
        window=rng.choice(SIDES),
    )


def draw(scene: Scene, kind: Kind, rng: random.Random, size: int = 64) -> Image.Image:
    """`scene` as a `kind` image of `size` x `size` pixels; `rng` places what the scene leaves
    open (where walls and doors are, the vanishing point, the furniture)."""
    return draw_plan(scene, rng, size) if kind == "plan" else draw_room(scene, rng, size)


# -- floor plans ---------------------------------------------------------------------------------


def draw_plan(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """White paper, thick outer walls, the flat cut into `scene.rooms` rooms by thin walls with
    door gaps, rooms tinted with the floor's colour, the window in the outer wall on its side."""
    image = Image.new("RGB", (size, size), PAPER)
    pen = ImageDraw.Draw(image)
    unit = size / 64
    outer = max(2, round(3 * unit))
    inner = max(1, round(2 * unit))
    door = max(4, round(8 * unit))
    margin = [round(rng.uniform(5, 11) * unit) for _ in range(4)]
    box = (margin[0], margin[1], size - 1 - margin[2], size - 1 - margin[3])
    rooms = [box]
    cuts: list[tuple[int, int, int, int]] = []  # (x0, y0, x1, y1) of each inner wall
    while len(rooms) < scene.rooms:
        rooms.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
        x0, y0, x1, y1 = rooms.pop()
        if x1 - x0 >= y1 - y0:
            cut = round(x0 + (x1 - x0) * rng.uniform(0.35, 0.65))
            rooms += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
            cuts.append((cut, y0, cut, y1))
        else:
            cut = round(y0 + (y1 - y0) * rng.uniform(0.35, 0.65))
            rooms += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
            cuts.append((x0, cut, x1, cut))
    tint = _mix(FLOORS[scene.floor][0], PAPER, 0.3)
    for room in rooms:
        if rng.random() < 0.6:
            pen.rectangle(room, fill=tint)
    for x0, y0, x1, y1 in cuts:
        pen.line((x0, y0, x1, y1), fill=INK, width=inner)
        length = max(x1 - x0, y1 - y0)
        if length > door + 4:
            at = rng.randint(2, length - door - 2)
            if x0 == x1:
                pen.line((x0, y0 + at, x1, y0 + at + door), fill=PAPER, width=inner + 1)
            else:
                pen.line((x0 + at, y0, x0 + at + door, y1), fill=PAPER, width=inner + 1)
    pen.rectangle(box, outline=INK, width=outer)
    _plan_window(pen, box, scene.window, outer, door, rng)
    return image


def _plan_window(
    pen: ImageDraw.ImageDraw, box: tuple[int, int, int, int], side: str, outer: int, width: int, rng: random.Random
) -> None:
    """A window: a gap in the outer wall with a thin line along it."""
    x0, y0, x1, y1 = box
    if side == "back":
        at = rng.randint(x0 + outer + 2, x1 - outer - width - 2)
        pen.rectangle((at, y0, at + width, y0 + outer - 1), fill=PAPER)
        pen.line((at, y0 + outer // 2, at + width, y0 + outer // 2), fill=INK, width=1)
        return
    x = x0 if side == "left" else x1 - outer + 1
    at = rng.randint(y0 + outer + 2, y1 - outer - width - 2)
    pen.rectangle((x, at, x + outer - 1, at + width), fill=PAPER)
    pen.line((x + outer // 2, at, x + outer // 2, at + width), fill=INK, width=1)


# -- interiors -----------------------------------------------------------------------------------


def draw_room(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """A one-point-perspective room: back wall, side walls (shaded), ceiling, the floor in its
    material, the window on its side, furniture blocks for the room type."""
    image = Image.new("RGB", (size, size))
    pen = ImageDraw.Draw(image)
    s = size - 1
    cx, cy = s * rng.uniform(0.42, 0.58), s * rng.uniform(0.4, 0.52)
    half_w, half_h = s * rng.uniform(0.2, 0.28), s * rng.uniform(0.17, 0.24)
    bx0, by0, bx1, by1 = cx - half_w, cy - half_h, cx + half_w, cy + half_h  # the back wall
    wall = WALLS[scene.wall]
    floor, pattern = FLOORS[scene.floor]
    pen.polygon([(0, 0), (s, 0), (bx1, by0), (bx0, by0)], fill=(238, 236, 232))  # ceiling
    pen.polygon([(0, 0), (bx0, by0), (bx0, by1), (0, s)], fill=_shade(wall, 0.82))  # left wall
    pen.polygon([(s, 0), (bx1, by0), (bx1, by1), (s, s)], fill=_shade(wall, 0.7))  # right wall
    pen.polygon([(0, s), (bx0, by1), (bx1, by1), (s, s)], fill=floor)  # floor
    pen.rectangle((bx0, by0, bx1, by1), fill=wall)
    _floor_pattern(pen, pattern, floor, (bx0, by1, bx1, s), s)
    _room_window(pen, scene.window, (bx0, by0, bx1, by1), s, rng)
    _furniture(pen, scene.room_type, (bx0, by0, bx1, by1), s, rng)
    return image


def _floor_pattern(
    pen: ImageDraw.ImageDraw, pattern: str, colour: tuple[int, int, int], back: tuple[float, ...], s: int
) -> None:
    bx0, by1, bx1, _ = back
    line = _shade(colour, 0.75)
    if pattern in ("planks", "grid"):  # lines towards the vanishing point
        for i in range(1, 6):
            t = i / 6
            pen.line((bx0 + (bx1 - bx0) * t, by1, s * t, s), fill=line, width=1)
    if pattern == "grid":  # and across, closer together towards the back
        for i in range(1, 4):
            t = (i / 4) ** 1.6
            y = by1 + (s - by1) * t
            pen.line((bx0 * (1 - t), y, bx1 + (s - bx1) * t, y), fill=line, width=1)


def _room_window(
    pen: ImageDraw.ImageDraw, side: str, back: tuple[float, float, float, float], s: int, rng: random.Random
) -> None:
    bx0, by0, bx1, by1 = back
    frame = (250, 250, 250)
    if side == "back":
        w, h = (bx1 - bx0) * rng.uniform(0.35, 0.55), (by1 - by0) * 0.45
        x = bx0 + (bx1 - bx0 - w) * rng.uniform(0.2, 0.8)
        y = by0 + (by1 - by0) * 0.15
        pen.rectangle((x, y, x + w, y + h), fill=SKY, outline=frame)
        return
    # A quad on a side wall, between two depths t0 < t1 (0: the back wall's edge, 1: the image's).
    t0, t1 = rng.uniform(0.15, 0.35), rng.uniform(0.55, 0.75)
    edge_x = 0 if side == "left" else s
    back_x = bx0 if side == "left" else bx1

    def at(t: float, v: float) -> tuple[float, float]:  # v: 0 top .. 1 bottom of the wall at depth t
        x = back_x + (edge_x - back_x) * t
        top = by0 + (0 - by0) * t
        bottom = by1 + (s - by1) * t
        return x, top + (bottom - top) * v

    pen.polygon([at(t0, 0.2), at(t1, 0.2), at(t1, 0.55), at(t0, 0.55)], fill=SKY, outline=frame)


def _furniture(
    pen: ImageDraw.ImageDraw, room_type: str, back: tuple[float, float, float, float], s: int, rng: random.Random
) -> None:
    """Blocks standing on the floor near the back wall: a sofa and a low table (living room), a
    bed (bedroom), counters along the back wall (kitchen), a desk and a shelf (study)."""
    bx0, by0, bx1, by1 = back
    w, h = bx1 - bx0, by1 - by0
    accent = rng.choice([(90, 60, 50), (60, 70, 90), (170, 160, 150), (120, 40, 40), (50, 90, 70)])
    blocks: list[tuple[float, float, float, float, tuple[int, int, int]]] = []  # x0, x1 on the back, height, depth
    if room_type == "living room":
        blocks = [(0.15, 0.75, 0.3, 0.25, accent), (0.35, 0.6, 0.15, 0.7, (150, 110, 70))]
    elif room_type == "bedroom":
        blocks = [(0.2, 0.8, 0.22, 0.6, (240, 240, 240)), (0.2, 0.8, 0.45, 0.02, accent)]
    elif room_type == "kitchen":
        blocks = [(0.0, 1.0, 0.35, 0.12, (225, 225, 225)), (0.0, 1.0, 0.05, 0.12, (60, 60, 65))]
    else:
        blocks = [(0.1, 0.55, 0.3, 0.2, (140, 100, 60)), (0.7, 0.95, 0.8, 0.08, accent)]
    shift = rng.uniform(-0.08, 0.08)
    for x0, x1, height, depth, colour in blocks:
        x0, x1 = min(max(x0 + shift, 0), 1), min(max(x1 + shift, 0), 1)
        # The block's front face stands `depth` of the way from the back wall to the viewer.
        front_y = by1 + (s - by1) * depth * 0.5
        scale = 1 + depth * 0.5 * (s - h) / max(h, 1)
        cx = bx0 + w / 2
        fx0 = cx + (bx0 + w * x0 - cx) * scale
        fx1 = cx + (bx0 + w * x1 - cx) * scale
        fh = h * height * scale
        pen.rectangle((fx0, front_y - fh, fx1, front_y), fill=colour, outline=_shade(colour, 0.6))
        pen.rectangle((fx0, front_y - fh, fx1, front_y - fh + max(1, fh * 0.15)), fill=_shade(colour, 0.85))


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = colour
    return round(r * factor), round(g * factor), round(b * factor)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    """t of `a` and 1 - t of `b`."""
    return (
        round(a[0] * t + b[0] * (1 - t)),
        round(a[1] * t + b[1] * (1 - t)),
        round(a[2] * t + b[2] * (1 - t)),
    )


def samples(
    count: int, seed: int, kinds: tuple[Kind, ...] = KINDS, size: int = 64
) -> list[tuple[Image.Image, str, Kind, Scene]]:
    """`count` (image, caption, kind, scene) samples, the kinds in turn; the same for the same
    seed."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        scene = random_scene(rng)
        kind = kinds[i % len(kinds)]
        out.append((draw(scene, kind, rng, size), scene.caption(), kind, scene))
    return out
