"""Deterministic procedural road scenes in the exact Cityscapes, COCO and Fishyscapes formats (docs/DATA.md).

``python -m mgcda_core.data.procedural --out DIR --seed S [--frames N] [--size HxW] [--workers W]`` writes

- ``DIR/cityscapes/``: ``leftImg8bit/train/<style>/<style>_<seq>_000019_leftImg8bit.png`` with ``gtFine`` labelIds
  (real Cityscapes label ids) and instanceIds (id * 1000 + k for car and person) — two source styles, one per city
  folder, ``N`` frames in all; void objects are present (``dynamic`` carts/animals on the road, ``static`` bins on
  the sidewalk, sometimes the ``ego vehicle`` bonnet);
- ``DIR/coco/``: ``annotations/instances_train2017.json`` and ``train2017/<12-digit id>.jpg`` with foreign objects
  (animals, cargo, debris) annotated as polygons or RLE under real COCO category ids and names; some images also
  hold a category the AnomalyMix filter drops, and some are smaller than ``coco_min_size``;
- ``DIR/fishyscapes/``: the held-out target style with foreign objects on the road, in the Synboost/PEBAL
  Fishyscapes layout that ``mgcda_core.data.eval_sets`` reads (``original/<name>.png`` RGB and
  ``labels/<name>.png`` uint8 0 normal / 1 anomaly / 255 void);
- ``DIR/procedural.json``: seed, size, counts, styles and the recommended ``--coco-min-size`` for prepare.

Everything is drawn as polygons with PIL ``ImageDraw`` (label, instance, colour and anomaly layers painted by the
same calls, so occlusion is consistent) and textured with vectorised numpy noise. Item ``i`` of part ``p`` uses
``numpy.random.default_rng([seed, p, i])``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from mgcda_core.data.cityscapes import label_id, label_ids_to_train_ids
from mgcda_core.errors import OutputError
from mgcda_core.utils.atomic import atomic_write_json, atomic_write_with
from mgcda_core.utils.cli import parse_size, user_errors

Polygon = np.ndarray  # K x 2 float (x, y)

# Real COCO category ids and names (instances_train2017.json) used by the mini COCO.
FOREIGN_CATEGORIES = {16: ("bird", "animal"), 18: ("dog", "animal"), 19: ("horse", "animal"),
                      20: ("sheep", "animal"), 21: ("cow", "animal"), 23: ("bear", "animal"),
                      27: ("backpack", "accessory"), 33: ("suitcase", "accessory"), 37: ("sports ball", "sports"),
                      41: ("skateboard", "sports"), 44: ("bottle", "kitchen"), 72: ("tv", "electronic")}
FILTERED_CATEGORIES = {1: ("person", "person"), 2: ("bicycle", "vehicle"), 3: ("car", "vehicle"),
                       4: ("motorcycle", "vehicle"), 6: ("bus", "vehicle"), 8: ("truck", "vehicle"),
                       10: ("traffic light", "outdoor"), 13: ("stop sign", "outdoor")}
SHAPE_OF_CATEGORY = {16: "bird", 18: "quadruped", 19: "quadruped", 20: "quadruped", 21: "quadruped",
                     23: "quadruped", 27: "box", 33: "box", 37: "ball", 41: "board", 44: "bottle", 72: "box",
                     1: "person", 2: "vehicle", 3: "vehicle", 4: "vehicle", 6: "vehicle", 8: "vehicle",
                     10: "box", 13: "octagon"}
# Debris-like shapes used on the road of the target set besides the COCO-like ones.
TARGET_ANOMALY_SHAPES = ("quadruped", "bird", "box", "ball", "bottle", "board", "debris")

CITYSCAPES_FRAME_SUFFIX = "000019"  # Cityscapes' annotated frames are the 20th of each snippet


@dataclass(frozen=True)
class SceneStyle:
    """A visual domain: palette (Cityscapes class name → RGB), lighting, texture and layout ranges."""

    city: str
    palette: dict[str, tuple[int, int, int]]
    light: float              # global brightness multiplier
    tint: tuple[float, float, float]
    noise: float              # per-pixel noise, in 0..255 units
    blotch: float             # amplitude of the low-frequency texture, relative
    fog: float                # 0..1 blend towards fog_colour at the horizon
    fog_colour: tuple[int, int, int]
    horizon: tuple[float, float]      # horizon height range, fraction of the image height
    road_half_width: tuple[float, float]  # at the bottom row, fraction of the image width
    urban: bool               # building facades beside the road (else vegetation and terrain)
    cars: tuple[int, int]
    people: tuple[int, int]
    ego_vehicle: float        # probability of the bonnet at the bottom


_BASE_PALETTE = {"sky": (110, 160, 215), "building": (120, 110, 100), "wall": (150, 140, 125),
                 "fence": (160, 140, 120), "vegetation": (70, 120, 40), "terrain": (140, 170, 90),
                 "road": (95, 90, 100), "sidewalk": (170, 150, 160), "pole": (110, 110, 110),
                 "traffic sign": (230, 200, 30), "traffic light": (40, 40, 40), "car": (30, 40, 150),
                 "person": (160, 50, 60), "static": (60, 90, 70), "dynamic": (140, 100, 50),
                 "ego vehicle": (30, 30, 35)}

STYLES = (
    SceneStyle("sunford", _BASE_PALETTE, 1.0, (1.0, 1.0, 1.0), 6.0, 0.15, 0.0, (200, 200, 200),
               (0.38, 0.48), (0.22, 0.32), True, (1, 4), (0, 3), 0.3),
    SceneStyle("greyhaven", {**_BASE_PALETTE, "sky": (175, 178, 182), "building": (95, 95, 105),
                             "road": (70, 72, 78), "sidewalk": (130, 128, 126), "vegetation": (55, 85, 50),
                             "car": (120, 20, 25)},
               0.85, (0.95, 1.0, 1.05), 10.0, 0.25, 0.25, (185, 188, 192), (0.30, 0.42), (0.26, 0.36), True,
               (2, 6), (1, 4), 0.6),
    # Held-out target: dusk, warm light, fog, rural layout with a wider road and no facades.
    SceneStyle("duskmoor", {**_BASE_PALETTE, "sky": (200, 120, 80), "vegetation": (45, 70, 35),
                            "terrain": (120, 95, 60), "road": (60, 55, 60), "sidewalk": (110, 95, 90),
                            "car": (180, 170, 40)},
               0.7, (1.15, 0.95, 0.8), 12.0, 0.3, 0.45, (150, 110, 100), (0.42, 0.55), (0.34, 0.46), False,
               (0, 3), (0, 2), 0.0),
)
SOURCE_STYLES = STYLES[:2]
TARGET_STYLE = STYLES[2]


class Scene(NamedTuple):
    image: np.ndarray         # HxWx3 uint8
    label_ids: np.ndarray     # HxW uint8 Cityscapes label ids
    instance_ids: np.ndarray  # HxW int32
    anomaly: np.ndarray       # HxW bool: foreign objects (target set only)


# ----------------------------------------------------------------------------------------------- shapes

def _ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 20) -> Polygon:
    angles = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _rotate(polygons: list[Polygon], angle: float, centre: tuple[float, float]) -> list[Polygon]:
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [(poly - centre) @ rotation.T + centre for poly in polygons]


def shape_polygons(kind: str, rng: np.random.Generator, cx: float, bottom: float, size: float) -> list[Polygon]:
    """Polygons of an object of about ``size`` pixels wide standing on ``bottom``, centred on ``cx``."""
    s = size
    if kind == "quadruped":
        height, facing = 0.7 * s, rng.choice([-1.0, 1.0])
        body_y = bottom - 0.55 * height
        legs = [_rect(cx + (dx - 0.04) * s, body_y, cx + (dx + 0.04) * s, bottom) for dx in (-0.28, -0.18, 0.15, 0.25)]
        head = _ellipse(cx + facing * 0.42 * s, body_y - 0.25 * height, 0.12 * s, 0.09 * s)
        neck_x = cx + facing * 0.33 * s
        neck = _rect(neck_x - 0.08 * s, body_y - 0.22 * height, neck_x + 0.08 * s, body_y)
        tail_x = cx - facing * 0.38 * s
        tail = _rect(tail_x - 0.1 * s, body_y - 0.02 * s, tail_x + 0.1 * s, body_y + 0.03 * s)
        return [_ellipse(cx, body_y, 0.36 * s, 0.2 * height), *legs, head, neck, tail]
    if kind == "bird":
        body = _ellipse(cx, bottom - 0.25 * s, 0.3 * s, 0.16 * s)
        head = _ellipse(cx + 0.3 * s, bottom - 0.42 * s, 0.12 * s, 0.1 * s)
        wing = np.array([[cx - 0.1 * s, bottom - 0.3 * s], [cx - 0.45 * s, bottom - 0.75 * s],
                         [cx + 0.15 * s, bottom - 0.35 * s]])
        return [body, head, wing, _rect(cx - 0.02 * s, bottom - 0.12 * s, cx + 0.02 * s, bottom)]
    if kind == "box":
        height = s * rng.uniform(0.5, 0.95)
        polygons = [_rect(cx - s / 2, bottom - height, cx + s / 2, bottom)]
        if rng.random() < 0.5:  # a handle
            polygons.append(_rect(cx - 0.15 * s, bottom - height - 0.12 * s, cx + 0.15 * s, bottom - height + 1))
        return _rotate(polygons, rng.uniform(-0.15, 0.15), (cx, bottom - height / 2))
    if kind == "ball":
        return [_ellipse(cx, bottom - s / 2, s / 2, s / 2, points=24)]
    if kind == "bottle":
        polygons = [_rect(cx - 0.5 * s, bottom - 0.22 * s, cx + 0.2 * s, bottom),
                    _rect(cx + 0.2 * s, bottom - 0.16 * s, cx + 0.5 * s, bottom - 0.06 * s)]
        return _rotate(polygons, rng.uniform(-0.3, 0.3), (cx, bottom - 0.11 * s))
    if kind == "board":
        polygons = [_rect(cx - 0.5 * s, bottom - 0.14 * s, cx + 0.5 * s, bottom - 0.06 * s),
                    _ellipse(cx - 0.3 * s, bottom - 0.05 * s, 0.05 * s, 0.05 * s),
                    _ellipse(cx + 0.3 * s, bottom - 0.05 * s, 0.05 * s, 0.05 * s)]
        return _rotate(polygons, rng.uniform(-0.1, 0.1), (cx, bottom - 0.08 * s))
    if kind == "debris":
        count = int(rng.integers(6, 11))
        angles = np.sort(rng.uniform(0.0, 2.0 * np.pi, count))
        radii = 0.5 * s * rng.uniform(0.45, 1.0, count)
        ry = 0.5 * rng.uniform(0.4, 0.8)
        return [np.stack([cx + radii * np.cos(angles), bottom - ry * s + ry * radii * np.sin(angles)], axis=1)]
    if kind == "person":
        height = 2.4 * s
        return [_ellipse(cx, bottom - 0.9 * height, 0.09 * height, 0.09 * height),
                _rect(cx - 0.2 * s, bottom - 0.82 * height, cx + 0.2 * s, bottom - 0.42 * height),
                _rect(cx - 0.18 * s, bottom - 0.44 * height, cx - 0.03 * s, bottom),
                _rect(cx + 0.03 * s, bottom - 0.44 * height, cx + 0.18 * s, bottom),
                _rect(cx - 0.32 * s, bottom - 0.8 * height, cx - 0.2 * s, bottom - 0.5 * height),
                _rect(cx + 0.2 * s, bottom - 0.8 * height, cx + 0.32 * s, bottom - 0.5 * height)]
    if kind == "vehicle":
        height = 0.45 * s
        return [_rect(cx - s / 2, bottom - 0.75 * height, cx + s / 2, bottom - 0.15 * height),
                np.array([[cx - 0.3 * s, bottom - 0.75 * height], [cx - 0.2 * s, bottom - height],
                          [cx + 0.22 * s, bottom - height], [cx + 0.32 * s, bottom - 0.75 * height]]),
                _ellipse(cx - 0.3 * s, bottom - 0.15 * height, 0.15 * height, 0.15 * height),
                _ellipse(cx + 0.3 * s, bottom - 0.15 * height, 0.15 * height, 0.15 * height)]
    if kind == "octagon":
        angles = np.pi / 8 + np.arange(8) * np.pi / 4
        sign = np.stack([cx + 0.5 * s * np.cos(angles), bottom - 1.3 * s + 0.5 * s * np.sin(angles)], axis=1)
        return [sign, _rect(cx - 0.05 * s, bottom - 0.8 * s, cx + 0.05 * s, bottom)]
    raise ValueError(f"unknown shape kind {kind!r}")


def _fit_inside(polygons: list[Polygon], width: int, height: int, margin: float = 1.0) -> list[Polygon]:
    """Scale down (about the centre) and shift the polygons so that all points lie inside the image."""
    points = np.concatenate(polygons)
    low, high = points.min(axis=0), points.max(axis=0)
    room = np.array([width - 1 - 2 * margin, height - 1 - 2 * margin])
    scale = min(1.0, float(np.min(room / np.maximum(high - low, 1e-6))))
    centre = (low + high) / 2
    polygons = [(poly - centre) * scale + centre for poly in polygons]
    low, high = centre + (low - centre) * scale, centre + (high - centre) * scale
    shift = np.maximum(margin - low, 0) - np.maximum(high - (np.array([width, height]) - 1 - margin), 0)
    return [poly + shift for poly in polygons]


# ----------------------------------------------------------------------------------------------- scenes

class _Canvas:
    """Label-id, instance-id, colour and anomaly layers painted by the same polygon calls."""

    def __init__(self, rng: np.random.Generator, style: SceneStyle, height: int, width: int) -> None:
        self.rng, self.style = rng, style
        sky_id = label_id("sky")
        size = (width, height)
        self.layers = {"label": Image.new("L", size, sky_id), "instance": Image.new("I", size, sky_id),
                       "colour": Image.new("RGB", size, style.palette["sky"]), "anomaly": Image.new("L", size, 0)}
        self.draw = {name: ImageDraw.Draw(layer) for name, layer in self.layers.items()}

    def fill(self, polygons: list[Polygon], label: int | None, colour: tuple[int, int, int],
             instance: int | None = None, anomaly: bool = False) -> None:
        """Paint polygons; ``label=None`` paints colour only (shadows)."""
        for poly in polygons:
            points = [tuple(point) for point in poly.tolist()]
            self.draw["colour"].polygon(points, fill=colour)
            if label is not None:
                self.draw["label"].polygon(points, fill=label)
                self.draw["instance"].polygon(points, fill=label if instance is None else instance)
                self.draw["anomaly"].polygon(points, fill=int(anomaly))

    def paint(self, name: str, polygons: list[Polygon], jitter: float = 8.0, instance: int | None = None) -> None:
        """Paint a Cityscapes class in the style's colour for it, jittered per object."""
        self.fill(polygons, label_id(name), _colour(self.rng, self.style.palette[name], jitter), instance)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.layers["colour"], dtype=np.float32), np.asarray(self.layers["label"]),
                np.asarray(self.layers["instance"]).astype(np.int32), np.asarray(self.layers["anomaly"]).astype(bool))


@dataclass(frozen=True)
class _Road:
    """Perspective of a straight road: horizon row, vanishing point, road and sidewalk half-widths at the bottom."""

    height: int
    width: int
    horizon: float
    vanish_x: float
    half: float
    side: float

    def x_at(self, offset: float, y: float) -> float:
        """x of the ground line that is ``offset`` px from the vanishing point at the bottom row."""
        return self.vanish_x + offset * self.depth(y)

    def depth(self, y: float) -> float:
        """0 at the horizon, 1 at the bottom row: the perspective scale of objects standing at row y."""
        return (y - self.horizon) / (self.height - self.horizon)

    def row(self, fraction: float) -> float:
        """The row ``fraction`` of the way from the horizon to the bottom."""
        return self.horizon + (self.height - self.horizon) * fraction


def _low_frequency(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """HxW smooth noise (about unit variance) made by bilinear upsampling of a coarse random grid."""
    coarse = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def _colour(rng: np.random.Generator, base: tuple[int, int, int], jitter: float) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in np.clip(np.asarray(base) + rng.normal(0.0, jitter, 3), 0, 255))
    return red, green, blue


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in rng.integers(20, 236, 3))
    return red, green, blue


def _draw_facades(canvas: _Canvas, road: _Road) -> None:
    """Urban background: a distant skyline, facade blocks in perspective on both sides, street trees."""
    rng, h, w, y_h, outer = canvas.rng, road.height, road.width, road.horizon, road.half + road.side
    canvas.paint("sidewalk", [_rect(0, y_h, w, h)], 6)  # pavement up to the facades
    for _ in range(int(rng.integers(4, 9))):
        x0 = rng.uniform(0, w)
        top, block_width = y_h - rng.uniform(0.03, 0.15) * h, rng.uniform(0.03, 0.1) * w
        canvas.paint("building", [_rect(x0, top, x0 + block_width, y_h + 1)], 15)
    for sign in (-1.0, 1.0):
        x_far, border = road.vanish_x + sign * 0.015 * w, (0.0 if sign < 0 else float(w))
        top_far, top_border = y_h - 0.06 * h, rng.uniform(0.0, 0.15) * h
        edges = np.sort(np.concatenate([[x_far, border], rng.uniform(min(x_far, border), max(x_far, border), 4)]))
        for xa, xb in zip(edges[:-1], edges[1:]):
            jump = rng.uniform(-0.08, 0.08) * h  # each block has its own height
            tops = [top_far + (top_border - top_far) * (x - x_far) / (border - x_far) + jump for x in (xa, xb)]
            bottoms = [min(float(h), y_h + (x - road.vanish_x) / (sign * outer) * (h - y_h)) for x in (xa, xb)]
            block = np.array([[xa, tops[0]], [xb, tops[1]], [xb, bottoms[1]], [xa, bottoms[0]], [xa, y_h]])
            canvas.paint("building", [block], 20)
        for _ in range(int(rng.integers(0, 3))):
            y = road.row(rng.uniform(0.2, 0.8))
            x, t = road.x_at(sign * outer * 1.05, y), road.depth(y)
            canvas.paint("vegetation", [_ellipse(x, y - 0.45 * h * t, 0.12 * w * t, 0.2 * h * t),
                                        _rect(x - 0.01 * w * t, y - 0.3 * h * t, x + 0.01 * w * t, y)], 12)


def _draw_countryside(canvas: _Canvas, road: _Road) -> None:
    """Rural background: a tree line on the horizon, terrain, a few large trees."""
    rng, h, w, y_h = canvas.rng, road.height, road.width, road.horizon
    xs = np.linspace(0, w, 24)
    tops = y_h - rng.uniform(0.03, 0.12, xs.size) * h
    canvas.paint("vegetation", [np.concatenate([np.stack([xs, tops], 1), [[w, y_h + 1], [0, y_h + 1]]])], 10)
    canvas.paint("terrain", [_rect(0, y_h, w, h)], 10)
    for _ in range(int(rng.integers(1, 4))):
        y = road.row(rng.uniform(0.1, 0.6))
        x, t = road.x_at(rng.choice([-1.0, 1.0]) * (road.half + road.side) * rng.uniform(1.2, 2.0), y), road.depth(y)
        canvas.paint("vegetation", [_ellipse(x, y - 0.4 * h * t, 0.15 * w * t, 0.25 * h * t)], 10)


class _Thing(NamedTuple):
    y: float      # bottom row (depth order)
    name: str     # Cityscapes class name, "pole" (with a sign) or "foreign" (a target-set anomaly)
    x: float
    size: float
    shape: str


def _place_things(rng: np.random.Generator, style: SceneStyle, road: _Road, void_objects: bool,
                  foreign_objects: int) -> list[_Thing]:
    """Cars and void/foreign objects on the road, people, poles and static objects beside it."""
    half, side = road.half, road.side

    def on_road(fraction: tuple[float, float]) -> tuple[float, float]:
        y = road.row(rng.uniform(*fraction))
        return y, road.x_at(rng.uniform(-0.6, 0.6) * half, y)

    def beside_road(fraction: tuple[float, float], lateral: tuple[float, float]) -> tuple[float, float]:
        y = road.row(rng.uniform(*fraction))
        return y, road.x_at(rng.choice([-1.0, 1.0]) * (half + side * rng.uniform(*lateral)), y)

    things = []
    for _ in range(int(rng.integers(style.cars[0], style.cars[1] + 1))):
        y, x = on_road((0.1, 0.9))
        things.append(_Thing(y, "car", x, 0.7 * half * road.depth(y), "vehicle"))
    for _ in range(int(rng.integers(style.people[0], style.people[1] + 1))):
        y, x = beside_road((0.15, 0.9), (0.2, 0.8))
        things.append(_Thing(y, "person", x, 0.1 * half * road.depth(y), "person"))
    for _ in range(int(rng.integers(1, 4))):
        y, x = beside_road((0.2, 0.95), (0.15, 0.15))
        things.append(_Thing(y, "pole", x, road.depth(y), "pole"))
    if void_objects:
        for _ in range(int(rng.integers(1, 3))):
            y, x = on_road((0.25, 0.95))
            shape = str(rng.choice(["quadruped", "box", "board"]))  # animals, carts, boards
            things.append(_Thing(y, "dynamic", x, 0.35 * half * road.depth(y), shape))
        for _ in range(int(rng.integers(0, 3))):
            y, x = beside_road((0.2, 0.95), (0.3, 0.8))
            things.append(_Thing(y, "static", x, 0.12 * half * road.depth(y), "box"))
    for _ in range(foreign_objects):
        y, x = on_road((0.3, 0.95))
        things.append(_Thing(y, "foreign", x, rng.uniform(0.25, 0.5) * half * road.depth(y),
                             str(rng.choice(TARGET_ANOMALY_SHAPES))))
    return sorted(things, key=lambda thing: thing.y)


def _draw_things(canvas: _Canvas, road: _Road, things: list[_Thing]) -> None:
    """Draw far to near so nearer things occlude; cars and persons get instance ids id * 1000 + k."""
    rng, h, w = canvas.rng, road.height, road.width
    counters = {"car": 0, "person": 0}
    for thing in things:
        if thing.name == "pole":
            t, pole_width = thing.size, max(1.0, 0.008 * w * thing.size)
            top, radius = thing.y - 0.6 * h * t, 0.03 * w * t
            canvas.paint("pole", [_rect(thing.x - pole_width, top, thing.x + pole_width, thing.y)], 5)
            sign_name = "traffic sign" if rng.random() < 0.7 else "traffic light"
            round_sign = rng.random() < 0.5
            sign = (_ellipse(thing.x, top, radius, radius) if round_sign
                    else _rect(thing.x - radius, top - 2 * radius, thing.x + radius, top))
            canvas.paint(sign_name, [sign], 10)
            continue
        polygons = shape_polygons(thing.shape, rng, thing.x, thing.y, max(thing.size, 2.0))
        if thing.name in counters:
            shadow = _ellipse(thing.x, thing.y, 0.55 * thing.size, 0.06 * thing.size)
            canvas.fill([shadow], None, (25, 25, 25))
            instance = label_id(thing.name) * 1000 + counters[thing.name]
            counters[thing.name] += 1
            canvas.paint(thing.name, polygons, 40 if thing.name == "car" else 30, instance)
        elif thing.name == "foreign":
            canvas.fill(polygons, label_id("unlabeled"), _random_colour(rng), anomaly=True)
        else:
            canvas.paint(thing.name, polygons, 30)


def render_scene(rng: np.random.Generator, style: SceneStyle, height: int, width: int,
                 void_objects: bool = True, foreign_objects: int = 0) -> Scene:
    """One road scene of ``style``: labels, instances and a textured RGB image (see the module docstring)."""
    half = rng.uniform(*style.road_half_width) * width
    road = _Road(height, width, horizon=rng.uniform(*style.horizon) * height,
                 vanish_x=width * (0.5 + rng.normal(0.0, 0.05)), half=half, side=half * rng.uniform(0.35, 0.6))
    canvas = _Canvas(rng, style, height, width)
    (_draw_facades if style.urban else _draw_countryside)(canvas, road)
    outer, y_h, x_v = road.half + road.side, road.horizon, road.vanish_x
    for name, half_width, jitter in (("sidewalk", outer, 6), ("road", road.half, 5)):
        canvas.paint(name, [np.array([[x_v - 1, y_h], [x_v + 1, y_h], [road.x_at(half_width, height), height],
                                      [road.x_at(-half_width, height), height]])], jitter)
    _draw_things(canvas, road, _place_things(rng, style, road, void_objects, foreign_objects))
    if rng.random() < style.ego_vehicle:
        canvas.paint("ego vehicle", [_ellipse(width / 2, height * 1.05, 0.75 * width,
                                              rng.uniform(0.1, 0.16) * height, points=40)], 5)
    colour, label_ids, instance_ids, anomaly = canvas.arrays()
    return Scene(_texture(rng, style, colour, label_ids, road), label_ids, instance_ids, anomaly)


def _texture(rng: np.random.Generator, style: SceneStyle, colour: np.ndarray, label_ids: np.ndarray,
             road: _Road) -> np.ndarray:
    """Shade the flat colour layer: texture, windows, lane dashes, sky gradient, light, tint, fog, noise."""
    h, w = label_ids.shape
    y_h = road.horizon
    yy, xx = np.ogrid[:h, :w]
    shade = 1.0 + style.blotch * (_low_frequency(rng, h, w, 24) + 0.5 * _low_frequency(rng, h, w, 6))
    windows = (label_ids == label_id("building")) & ((xx % 11) < 5) & ((yy % 13) < 6)
    shade = shade * np.where(windows, 0.65, 1.0)
    shade = shade * np.where(label_ids == label_id("sky"), 0.85 + 0.3 * np.clip(yy / max(y_h, 1.0), 0, 1), 1.0)
    rgb = colour * shade[..., None]
    t = np.clip((yy - y_h) / (h - y_h), 0.0, 1.0)
    dashes = (np.abs(xx - road.vanish_x) < 0.5 + 0.006 * w * t) & ((t * 18.0) % 1.0 < 0.5)
    lane = (label_ids == label_id("road")) & dashes
    rgb[lane] = 225.0
    rgb = rgb * style.light * np.asarray(style.tint, dtype=np.float32)
    fog = style.fog * np.clip(1.0 - (yy - y_h) / (0.7 * (h - y_h)), 0.0, 1.0)[..., None]
    rgb = rgb * (1.0 - fog) + np.asarray(style.fog_colour, dtype=np.float32) * fog
    rgb += rng.normal(0.0, style.noise, rgb.shape).astype(np.float32)
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------- mini COCO

def _coco_categories() -> list[dict]:
    categories = {**FOREIGN_CATEGORIES, **FILTERED_CATEGORIES}
    return [{"id": cid, "name": name, "supercategory": parent} for cid, (name, parent) in sorted(categories.items())]


def coco_image(rng: np.random.Generator, image_id: int, height: int, width: int, with_filtered: bool,
               first_annotation_id: int) -> tuple[np.ndarray, list[dict]]:
    """A textured background with 1-3 foreign objects (and one filtered-category object if asked).

    Each object is rasterised by pycocotools from its own polygons, so the saved annotation (polygon or RLE)
    decodes to exactly the painted pixels (later objects may occlude earlier ones, as in real photos).
    """
    ground = np.asarray([_random_colour(rng), _random_colour(rng)], dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    image = ground[0] * (1 - ramp) + ground[1] * ramp
    image = image * (1.0 + 0.2 * _low_frequency(rng, height, width, 16))[..., None]
    categories = [int(c) for c in rng.choice(sorted(FOREIGN_CATEGORIES), int(rng.integers(1, 4)))]
    if with_filtered:
        categories.insert(int(rng.integers(len(categories) + 1)), int(rng.choice(sorted(FILTERED_CATEGORIES))))
    annotations = []
    for offset, category in enumerate(categories):
        size = rng.uniform(0.25, 0.5) * min(height, width)
        polygons = shape_polygons(SHAPE_OF_CATEGORY[category], rng, rng.uniform(0, width), rng.uniform(0, height), size)
        polygons = _fit_inside(polygons, width, height)
        flat = [poly.ravel().round(2).tolist() for poly in polygons]
        rle = mask_utils.merge(mask_utils.frPyObjects(flat, height, width))
        mask = mask_utils.decode(rle).astype(bool)
        shade = 1.0 + 0.3 * _low_frequency(rng, height, width, 8)
        image[mask] = (np.asarray(_random_colour(rng), dtype=np.float32) * shade[mask][:, None])
        crowd = bool(rng.random() < 0.5)  # COCO stores crowd regions as RLE, single objects as polygons
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")} if crowd else flat
        annotations.append({"id": first_annotation_id + offset, "image_id": image_id, "category_id": category,
                            "segmentation": segmentation, "area": float(mask_utils.area(rle)),
                            "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": int(crowd)})
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), annotations


# ----------------------------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class ProceduralConfig:
    frames: int = 200                  # Cityscapes source frames, alternating between the two source styles
    size: tuple[int, int] = (256, 512)  # (height, width) of the Cityscapes and Fishyscapes frames
    seed: int = 0
    coco_images: int | None = None     # default max(8, frames // 2)
    target_frames: int | None = None   # default max(4, frames // 4)

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2 (one per source style), got {self.frames}")
        if min(self.size) < 32:
            raise ValueError(f"size must be at least 32x32, got {self.size[0]}x{self.size[1]}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy seeds), got {self.seed}")
        for name in ("coco_images", "target_frames"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 when given, got {getattr(self, name)}")

    @property
    def num_coco_images(self) -> int:
        return self.coco_images if self.coco_images is not None else max(8, self.frames // 2)

    @property
    def num_target_frames(self) -> int:
        return self.target_frames if self.target_frames is not None else max(4, self.frames // 4)

    @property
    def coco_min_size(self) -> int:
        """The AnomalyMix minimum side that keeps the normal mini-COCO images and drops the small ones."""
        return int(round(0.6 * self.size[0]))


def _write_png(path: Path, array: np.ndarray) -> None:
    image = Image.fromarray(array.astype(np.uint16) if array.dtype == np.int32 else array)
    atomic_write_with(path, lambda handle: image.save(handle, format="PNG"))


def _write_cityscapes_frame(root: Path, config: ProceduralConfig, index: int) -> str:
    style = SOURCE_STYLES[index % len(SOURCE_STYLES)]
    rng = np.random.default_rng([config.seed, 0, index])
    scene = render_scene(rng, style, *config.size)
    name = f"{style.city}_{index // len(SOURCE_STYLES):06d}_{CITYSCAPES_FRAME_SUFFIX}"
    _write_png(root / "leftImg8bit" / "train" / style.city / f"{name}_leftImg8bit.png", scene.image)
    _write_png(root / "gtFine" / "train" / style.city / f"{name}_gtFine_labelIds.png", scene.label_ids)
    _write_png(root / "gtFine" / "train" / style.city / f"{name}_gtFine_instanceIds.png", scene.instance_ids)
    return name


def _write_target_frame(root: Path, config: ProceduralConfig, index: int) -> str:
    rng = np.random.default_rng([config.seed, 1, index])
    scene = render_scene(rng, TARGET_STYLE, *config.size, void_objects=False,
                         foreign_objects=int(rng.integers(1, 4)))
    label = np.where(label_ids_to_train_ids(scene.label_ids) == 255, 255, 0).astype(np.uint8)
    label[scene.anomaly] = 1
    name = f"{TARGET_STYLE.city}_{index:06d}_{CITYSCAPES_FRAME_SUFFIX}"
    _write_png(root / "original" / f"{name}.png", scene.image)
    _write_png(root / "labels" / f"{name}.png", label)
    return name


def _write_coco_image(root: Path, config: ProceduralConfig, index: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng([config.seed, 2, index])
    side = config.size[0]
    small = index % 7 == 3  # below coco_min_size: exercises the AnomalyMix size filter
    scale = rng.uniform(0.35, 0.5, 2) if small else rng.uniform([0.75, 0.9], [1.25, 1.4])
    height, width = (int(v) for v in np.round(scale * side))
    image_id = index + 1
    image, annotations = coco_image(rng, image_id, height, width, with_filtered=index % 5 == 1,
                                    first_annotation_id=100 * image_id)
    info: dict[str, Any] = {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": height, "width": width}
    atomic_write_with(root / "train2017" / info["file_name"],
                      lambda handle: Image.fromarray(image).save(handle, format="JPEG", quality=95))
    return info, annotations


def _write_item(out: Path, config: ProceduralConfig, part: int, index: int) -> tuple[dict, list[dict]] | None:
    """Item ``index`` of part 0 (Cityscapes), 1 (Fishyscapes target) or 2 (COCO, returns its JSON entries)."""
    if part == 0:
        _write_cityscapes_frame(out / "cityscapes", config, index)
    elif part == 1:
        _write_target_frame(out / "fishyscapes", config, index)
    else:
        return _write_coco_image(out / "coco", config, index)
    return None


def generate(out: str | os.PathLike[str], config: ProceduralConfig = ProceduralConfig(), workers: int = 1) -> dict:
    """Write the mini Cityscapes, mini COCO and target Fishyscapes set under ``out``; return the manifest.

    Items are independent (own seeds), so ``workers`` processes give the same bytes as one.
    """
    out = Path(out)
    counts = (config.frames, config.num_target_frames, config.num_coco_images)
    jobs = [(part, index) for part, count in enumerate(counts) for index in range(count)]
    parts, indices = zip(*jobs)
    images, annotations = [], []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers))
            results = pool.map(_write_item, repeat(out), repeat(config), parts, indices, chunksize=4)
        else:
            results = map(_write_item, repeat(out), repeat(config), parts, indices)
        for result in tqdm(results, total=len(jobs), desc="procedural scenes", unit="img", file=sys.stderr):
            if result is not None:  # COCO entries, in index order
                images.append(result[0])
                annotations.extend(result[1])
    atomic_write_json(out / "coco" / "annotations" / "instances_train2017.json",
                      {"info": {"description": "MGCDA procedural mini COCO", "version": "1.0"},
                       "licenses": [], "images": images, "annotations": annotations, "categories": _coco_categories()})
    manifest = {"seed": config.seed, "size": list(config.size), "cityscapes_frames": config.frames,
                "target_frames": config.num_target_frames, "coco_images": config.num_coco_images,
                "coco_min_size": config.coco_min_size, "source_styles": [s.city for s in SOURCE_STYLES],
                "target_style": TARGET_STYLE.city, "styles": [asdict(style) for style in STYLES]}
    atomic_write_json(out / "procedural.json", manifest)
    return manifest



@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.data.procedural", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=200, help="Cityscapes source frames (both styles together)")
    parser.add_argument("--size", type=parse_size, default=(256, 512), help="frame size HxW (default 256x512)")
    parser.add_argument("--coco-images", type=int, default=None, help="mini-COCO images (default max(8, frames/2))")
    parser.add_argument("--target-frames", type=int, default=None,
                        help="Fishyscapes target frames (default max(4, frames/4))")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes (default min(2, CPUs)); the output does not depend on it")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(f"--out {args.out} is a file; name a folder")
    try:
        config = ProceduralConfig(args.frames, args.size, args.seed, args.coco_images, args.target_frames)
    except ValueError as error:
        parser.error(str(error))
    manifest = generate(args.out, config, args.workers)
    print(f"wrote {manifest['cityscapes_frames']} Cityscapes frames ({', '.join(manifest['source_styles'])}), "
          f"{manifest['target_frames']} Fishyscapes frames ({manifest['target_style']}) and "
          f"{manifest['coco_images']} COCO images to {args.out}; "
          f"prepare with --coco-min-size {manifest['coco_min_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
