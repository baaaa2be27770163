"""Procedural scenes: byte-identical for a seed, and readable by the Cityscapes, COCO, AnomalyMix and
Fishyscapes readers with the facts they promise (real ids, instances, void objects, filtered COCO images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mgcda_core.data.anomalymix import AnomalyMixConfig, filter_coco_images
from mgcda_core.data.cityscapes import list_frames, read_frame
from mgcda_core.data.coco import CocoInstances
from mgcda_core.data.eval_sets import open_eval_set
from mgcda_core.data.procedural import SOURCE_STYLES, TARGET_STYLE, ProceduralConfig, generate, main

SIZE = (64, 128)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("procedural")
    assert main(["--out", str(out), "--seed", "5", "--frames", "8", "--size", "64x128", "--workers", "2"]) == 0
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_gives_identical_bytes_with_any_worker_count(generated: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", ProceduralConfig(frames=8, size=SIZE, seed=5), workers=1)  # fixture: 2
    generate(tmp_path / "other", ProceduralConfig(frames=8, size=SIZE, seed=6))
    first, again, other = _files(generated), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert len(first) == 8 * 3 + 4 * 2 + 8 + 2  # Cityscapes triples, Fishyscapes pairs, COCO images, 2 JSON files
    assert first == again
    assert first.keys() == other.keys()
    assert sum(first[name] != other[name] for name in first) >= len(first) - 2  # only the layout is shared


def test_cityscapes_part_has_real_ids_instances_and_void_objects(generated: Path) -> None:
    frames = list_frames(generated / "cityscapes", "train")
    assert sorted({frame.city for frame in frames}) == sorted(style.city for style in SOURCE_STYLES)
    assert frames[0].image.name.endswith("_000019_leftImg8bit.png")
    dynamic_frames = 0
    for frame in frames:
        sample = read_frame(frame)  # checks sizes, id validity and instance/label agreement
        assert sample.image.shape == (*SIZE, 3)
        things = np.unique(sample.instance_ids[sample.instance_ids >= 1000])
        assert set((things // 1000).tolist()) <= {24, 26} and (things % 1000 < 10).all()  # person/car, k small
        assert {7, 8, 23} <= set(np.unique(sample.label_ids).tolist())   # road, sidewalk, sky
        dynamic_frames += int((sample.label_ids == 5).any())
    assert dynamic_frames >= len(frames) // 2  # 'dynamic' void objects on the road


def test_coco_part_holds_polygons_rle_and_filtered_images(generated: Path) -> None:
    coco = CocoInstances(generated / "coco")
    manifest = json.loads((generated / "procedural.json").read_text())
    data = json.loads((generated / "coco" / "annotations" / "instances_train2017.json").read_text())
    kinds = {"polygon" if isinstance(ann["segmentation"], list) else "rle" for ann in data["annotations"]}
    assert kinds == {"polygon", "rle"}
    assert {"dog": 18, "stop sign": 13, "person": 1, "traffic light": 10}.items() <= coco.category_names.items()
    for ann in data["annotations"]:  # each annotation decodes to its stored area
        assert ann["area"] == pytest.approx(float(coco.coco.annToMask(ann).sum()))
        assert ann["area"] == pytest.approx(float(mask_utils.area(coco.coco.annToRLE(ann))))
    kept = filter_coco_images(coco, AnomalyMixConfig(min_size=manifest["coco_min_size"]))
    excluded = {1, 2, 3, 4, 6, 8, 10, 13}
    with_filtered = {ann["image_id"] for ann in data["annotations"] if ann["category_id"] in excluded}
    small = {img["id"] for img in data["images"] if min(img["height"], img["width"]) < manifest["coco_min_size"]}
    assert with_filtered and small and kept
    assert set(kept) == {img["id"] for img in data["images"]} - with_filtered - small


def test_fishyscapes_target_set_reads_with_the_evaluation_reader(generated: Path) -> None:
    evaluation = open_eval_set("fs_lost_and_found", generated / "fishyscapes")
    assert len(evaluation) == 4
    for sample in evaluation:
        assert sample.name.startswith(TARGET_STYLE.city) and sample.image.shape == (*SIZE, 3)
        assert set(np.unique(sample.label).tolist()) <= {0, 1, 255} and (sample.label == 1).any()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--size", "64by128"])
    with pytest.raises(ValueError, match="frames must be >= 2"):
        ProceduralConfig(frames=1)
