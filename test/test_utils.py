"""Shared helpers: atomic writes, image conversion, CLI size parsing."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from mgcda_core.utils.atomic import atomic_write_json, atomic_write_text, atomic_write_with
from mgcda_core.utils.cli import parse_size
from mgcda_core.utils.flops import call_flops, count_flops
from mgcda_core.utils.images import read_label, read_rgb, resize_nearest, to_rgb, write_png


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2, "y": [1, 2]})
    assert target.read_text() == '{\n  "x": 2,\n  "y": [\n    1,\n    2\n  ]\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    def broken_writer(handle):
        handle.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        atomic_write_with(target, broken_writer)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_to_rgb_converts_grey_and_rgba_and_refuses_bad_images():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_rgb(grey)
    assert rgb.shape == (3, 4, 3) and (rgb == grey[:, :, None]).all()
    rgba = np.dstack([rgb, np.full((3, 4), 7, np.uint8)])
    assert np.array_equal(to_rgb(rgba), rgb)
    with pytest.raises(ValueError, match="1x1 is too small"):
        to_rgb(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"HxWx3.*\(4, 4, 2\)"):
        to_rgb(np.zeros((4, 4, 2), np.uint8))


def test_png_round_trip_and_colour_label_refused(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    write_png(tmp_path / "i.png", image)
    assert np.array_equal(read_rgb(tmp_path / "i.png"), image)
    label = np.array([[0, 1], [255, 1]], np.uint8)
    write_png(tmp_path / "l.png", label)
    assert np.array_equal(read_label(tmp_path / "l.png"), label)
    with pytest.raises(ValueError, match=r"c\.png.*mode 'RGB'.*colour mask"):
        Image.fromarray(image).save(tmp_path / "c.png")
        read_label(tmp_path / "c.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_rgb(tmp_path / "missing.png")


def test_parse_size():
    assert parse_size("256x512") == (256, 512)
    assert parse_size("64X128") == (64, 128)
    for bad in ("256", "axb", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError, match="HxW"):
            parse_size(bad)


def test_resize_nearest_keeps_label_values_and_skips_same_size():
    label = np.array([[0, 1], [255, 1]], np.uint8)
    up = resize_nearest(label, (4, 6))
    assert up.shape == (4, 6) and set(np.unique(up)) == {0, 1, 255}
    assert np.array_equal(up, np.repeat(np.repeat(label, 2, axis=0), 3, axis=1))
    assert resize_nearest(label, (2, 2)) is label
    rgb = np.random.default_rng(1).integers(0, 256, (4, 8, 3), dtype=np.uint8)
    assert np.array_equal(resize_nearest(rgb, (2, 4)), rgb[1::2, 1::2])  # PIL samples pixel centres


def test_call_flops_counts_whatever_the_call_runs() -> None:
    import torch

    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    forward = count_flops(layer, x)
    assert forward == 2 * 4 * 16 * 8  # one multiply-add per weight and sample, counted as 2
    # forward + the weight gradient (the input needs none): twice the forward's matrix products
    assert call_flops(lambda: layer(x).sum().backward()) == 2 * forward
