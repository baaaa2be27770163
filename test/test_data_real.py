"""Readers of the real training data (pix2pix Cityscapes, CamVid, object cut-outs), the real-data domains and
``prepare --train-real``: synthetic inputs with known answers, and a few real files from ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import name2label
from PIL import Image

from mgcda_core.data.camvid import CamVid, camvid_to_train_ids
from mgcda_core.data.cityscapes_pix2pix import UNMATCHED, CityscapesPix2Pix, decode_colour_label
from mgcda_core.data.layout import LAYOUT_FOLDERS, list_layout
from mgcda_core.data.objects import (
    MIN_OBJECT_PIXELS,
    ObjectRef,
    coco_yolo_objects,
    figure_ground_objects,
    load_object,
    mask_folder_objects,
    polygon_area,
    split_identities,
)
from mgcda_core.data.real_domains import Background, PasteConfig, RealAnomalyMix, RealVoidClass, paste_scaled
from mgcda_core.errors import DataError, MissingInputError
from mgcda_core.utils.images import read_label

COLOUR = {name: tuple(name2label[name].color) for name in ("road", "car", "dynamic", "pole", "unlabeled", "sky")}


def _colour_image(rows: list[list[tuple[int, int, int]]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


def test_colour_decoding_maps_palette_colours_and_refuses_far_ones() -> None:
    road, car, dynamic = COLOUR["road"], COLOUR["car"], COLOUR["dynamic"]
    blurred_road = tuple(c + 10 for c in road)  # 17.3 from road: within the 30 threshold
    far = (255, 255, 0)  # no Cityscapes colour within 30 of it
    colour = _colour_image([[road, car, dynamic, blurred_road],
                            [COLOUR["pole"], COLOUR["unlabeled"], COLOUR["sky"], far]])
    ids = decode_colour_label(colour)
    expected = [[name2label["road"].id, name2label["car"].id, name2label["dynamic"].id, name2label["road"].id],
                [name2label["pole"].id, name2label["unlabeled"].id, name2label["sky"].id, UNMATCHED]]
    np.testing.assert_array_equal(ids, expected)
    # a tighter threshold leaves the blurred pixel unmatched instead of guessing
    assert decode_colour_label(colour, max_distance=10.0)[0, 3] == UNMATCHED


def test_colour_decoding_refuses_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        decode_colour_label(np.zeros((4, 4), dtype=np.uint8))


def _pix2pix_tree(root: Path, colour_half: np.ndarray) -> Path:
    (root / "train").mkdir(parents=True)
    image_half = np.full((*colour_half.shape[:2], 3), 90, dtype=np.uint8)
    Image.fromarray(np.concatenate([image_half, colour_half], 1)).save(root / "train" / "1.png")
    # the reader takes .jpg files; write losslessly then rename so the test knows every pixel exactly
    (root / "train" / "1.png").rename(root / "train" / "1.jpg")
    return root


def test_pix2pix_reader_splits_halves_and_restores_the_aspect(tmp_path: Path) -> None:
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[:, :4] = COLOUR["road"]
    colour[:, 4:] = COLOUR["dynamic"]
    reader = CityscapesPix2Pix(_pix2pix_tree(tmp_path, colour), "train", size=(8, 16))
    sample = reader[0]
    assert sample.name == "cityscapes_train_1" and sample.image.shape == (8, 16, 3)
    assert np.all(sample.image == 90)
    assert np.all(sample.label_ids[:, :8] == name2label["road"].id)
    assert np.all(sample.label_ids[:, 8:] == name2label["dynamic"].id)
    # VoidClass: the dynamic half is the anomaly, road is normal
    label = RealVoidClass(reader)[0].label
    assert np.all(label[:, :8] == 0) and np.all(label[:, 8:] == 1)


def test_pix2pix_reader_names_a_frame_that_is_not_a_pair(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / "3.jpg")
    with pytest.raises(DataError, match=r"3\.jpg: size 8x8, expected a side-by-side pair"):
        CityscapesPix2Pix(tmp_path, "train")[0]
    with pytest.raises(FileNotFoundError, match="val"):
        CityscapesPix2Pix(tmp_path, "val")


def test_camvid_ids_map_to_cityscapes_train_ids_and_bad_ids_are_named(tmp_path: Path) -> None:
    ids = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = [[10, 2, 5, 0], [1, 8, 7, 4], [13, 11, 12, 255]]  # sky building pole road / ... / unlabelled
    np.testing.assert_array_equal(camvid_to_train_ids(ids), expected)
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(tmp_path / "train" / "a.png")
    Image.fromarray(np.full((3, 4), 12, dtype=np.uint8)).save(tmp_path / "trainannot" / "a.png")
    (tmp_path / "train.txt").write_text("/train/a.png /trainannot/a.png\n")
    with pytest.raises(DataError, match=r"trainannot/a\.png: label value 12 is not a CamVid id"):
        CamVid(tmp_path, "train")[0]
    (tmp_path / "train.txt").write_text("/train/a.png /trainannot/missing.png\n")
    with pytest.raises(MissingInputError, match=r"train\.txt:1: .*missing\.png does not exist"):
        CamVid(tmp_path, "train")


def test_polygon_area_and_object_loading_errors(tmp_path: Path) -> None:
    assert polygon_area([0, 0, 1, 0, 1, 1, 0, 1]) == pytest.approx(1.0)
    assert polygon_area([0, 0, 0.5, 0, 0, 0.5]) == pytest.approx(0.125)
    image = tmp_path / "x.jpg"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(image)
    small = tmp_path / "x.png"
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:10, :10] = 255  # 100 px < MIN_OBJECT_PIXELS
    Image.fromarray(mask).save(small)
    with pytest.raises(ValueError, match=f"x.png: object t/x has 100 mask pixels, fewer than the {MIN_OBJECT_PIXELS}"):
        load_object(ObjectRef("t/x", image, mask=small))
    Image.fromarray(np.zeros((20, 40), dtype=np.uint8)).save(small)
    with pytest.raises(DataError, match="mask size 40x20 differs from its image"):
        load_object(ObjectRef("t/x", image, mask=small))


def test_identities_are_held_out_whole_and_per_source() -> None:
    refs = [ObjectRef(f"{source}/{k}", Path(f"{source}{k}-{i}.jpg"), mask=Path("m.png"))
            for source in ("a", "b") for k in range(10) for i in range(3)]
    train, held = split_identities(refs, every=5)
    held_ids = {r.identity for r in held}
    assert held_ids == {"a/4", "a/9", "b/4", "b/9"}  # sorted names, every 5th, per source
    assert not held_ids & {r.identity for r in train} and len(train) + len(held) == len(refs)


def test_paste_puts_scaled_objects_on_road_and_labels_them() -> None:
    height, width = 64, 128
    train_ids = np.full((height, width), 2, dtype=np.uint8)  # building ...
    train_ids[40:, :] = 0  # ... above a road
    image = np.zeros((height, width, 3), dtype=np.uint8)
    obj = np.full((100, 50, 3), 200, dtype=np.uint8)
    mask = np.ones((100, 50), dtype=bool)
    config = PasteConfig(min_height=0.1, max_height=0.5, max_width=0.5)
    out, pasted = paste_scaled(image, train_ids, [obj], [mask], np.random.default_rng(3), config)
    rows, cols = np.nonzero(pasted)
    assert rows.size > 0 and np.all(out[pasted] == 200) and np.all(out[~pasted] == 0)
    assert train_ids[rows.max(), int(np.median(cols))] == 0  # the object's foot stands on road
    assert rows.max() - rows.min() + 1 <= 0.5 * height + 1  # no taller than max_height of the frame
    assert cols.max() - cols.min() + 1 <= 0.5 * width + 1


class _Backgrounds:
    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def name(self, index: int) -> str:
        return f"bg{index}"

    def background(self, index: int) -> Background:
        train_ids = np.zeros((32, 64), dtype=np.uint8)
        train_ids[:4] = 255  # a void band stays ignored
        return Background(self.name(index), np.zeros((32, 64, 3), dtype=np.uint8), train_ids)


def test_anomaly_mix_is_reproducible_per_frame_and_labels_pasted_pixels(tmp_path: Path) -> None:
    image = tmp_path / "o.jpg"
    mask = tmp_path / "o.png"
    Image.fromarray(np.full((64, 64, 3), 255, dtype=np.uint8)).save(image)
    Image.fromarray(np.full((64, 64), 255, dtype=np.uint8)).save(mask)
    mix = RealAnomalyMix([_Backgrounds(3)], [ObjectRef("t/o", image, mask=mask)], PasteConfig(variants=2, seed=5))
    assert [f.name for f in mix.frames] == [f"bg{i}_mix{v}" for v in range(2) for i in range(3)]
    first, again = mix[4], mix[4]
    np.testing.assert_array_equal(first.label, again.label)
    assert set(np.unique(first.label)) <= {0, 1, 255}
    pasted = first.label == 1
    assert pasted.any() and np.all(first.image[pasted] > 200)  # white object on a black frame (JPEG: near 255)
    assert np.all(first.label[:4][~pasted[:4]] == 255)
    assert not np.array_equal(mix[1].label, mix[4].label)  # another version of the same background differs


# --- real files (../shared/data/train_real) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_real(shared_data: Path) -> Path:
    root = shared_data / "train_real"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def test_real_pix2pix_frames_decode_to_known_ids_with_few_unmatched(train_real: Path) -> None:
    reader = CityscapesPix2Pix(train_real / "cityscapes_pix2pix", "val")
    assert len(reader) == 500
    sample = reader[0]
    assert sample.image.shape == (256, 512, 3) and sample.label_ids.shape == (256, 512)
    valid_ids = {label.id for label in name2label.values() if label.id >= 0}
    assert set(np.unique(sample.label_ids).tolist()) <= valid_ids | {UNMATCHED}
    unmatched = np.mean(sample.label_ids == UNMATCHED)
    assert 0.01 < unmatched < 0.25, unmatched  # JPEG edges only (about 9.5 % on average)
    assert np.mean(sample.label_ids == name2label["road"].id) > 0.1  # a driving frame shows road


def test_real_camvid_and_objects_read(train_real: Path) -> None:
    camvid = CamVid(train_real / "camvid", "val")
    assert len(camvid) == 101
    sample = camvid[0]
    assert sample.image.shape == (360, 480, 3) and sample.train_ids.shape == (360, 480)
    assert set(np.unique(sample.train_ids).tolist()) <= {0, 1, 2, 4, 5, 7, 8, 10, 11, 12, 13, 255}
    coco = coco_yolo_objects(train_real / "objects" / "coco128_seg")
    assert coco and not {r.identity for r in coco} & {"coco/person", "coco/car", "coco/truck", "coco/train"}
    davis = mask_folder_objects(train_real / "objects" / "davis2016")
    horses = figure_ground_objects(train_real / "objects" / "weizmann_horses")
    assert len({r.identity for r in davis}) == 16 and len(horses) == 328
    for ref in (coco[0], davis[0], horses[0]):
        obj = load_object(ref)
        assert obj.image.shape[:2] == obj.mask.shape and obj.mask.any(axis=0).all() and obj.mask.any(axis=1).all()


def test_prepare_train_real_writes_three_domains(train_real: Path, tmp_path: Path) -> None:
    from mgcda_core.prepare import REAL_DOMAINS, PrepareConfig, prepare

    config = PrepareConfig(None, None, tmp_path / "out", size=(64, 128), limit=2, domains=REAL_DOMAINS,
                           train_real=train_real, variants=1)
    summary = prepare(config)
    for domain in REAL_DOMAINS:
        names = list_layout(tmp_path / "out" / domain)
        assert len(names) == 2 and summary["domains"][domain]["frames"] == 2
        assert all((tmp_path / "out" / domain / f / names[0]).is_file() for f in LAYOUT_FOLDERS)
    label = read_label(tmp_path / "out" / "anomalymix" / "labels" / list_layout(tmp_path / "out" / "anomalymix")[0])
    assert label.shape == (64, 128) and (label == 1).any()
    with pytest.raises(ValueError, match="either --train-real or both --cityscapes and --coco"):
        PrepareConfig(None, None, tmp_path, train_real=None)


def test_prepare_shards_split_the_frames(train_real: Path, tmp_path: Path) -> None:
    from mgcda_core.prepare import PrepareConfig, prepare

    config = PrepareConfig(None, None, tmp_path, size=(64, 128), limit=3, domains=("val_anomalymix",),
                           train_real=train_real, variants=1, shard=(2, 2))
    first = prepare(config)["domains"]["val_anomalymix"]
    assert (first["written"], first["unfinished"]) == (1, 2)  # frame 1 of 0, 1, 2
    assert list_layout(tmp_path / "val_anomalymix") == ["cityscapes_val_2_mix0.png"]
    from dataclasses import replace

    rest = prepare(replace(config, shard=(1, 1)))["domains"]["val_anomalymix"]
    assert (rest["written"], rest["skipped"], rest["unfinished"]) == (2, 1, 0)
    with pytest.raises(ValueError, match="shard must be K/N"):
        replace(config, shard=(3, 2))
