"""Training-layout dataset (docs/DATA.md) and the deterministic two-domain batch order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mgcda_core.data.layout import (
    LAYOUT_FOLDERS,
    DomainBatchSampler,
    LayoutDataset,
    LayoutError,
    MultiDomainDataset,
    list_layout,
)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def write_layout(root: Path, count: int, size: tuple[int, int] = (32, 64), seed: int = 0, prefix: str = "img") -> Path:
    """A tiny random training layout: every folder holds the same ``count`` PNGs of ``size`` (height, width).

    Labels: a random anomaly rectangle (1), a band of ignore (255), the rest normal (0). Semantic: random ids
    with some void (255).
    """
    rng = np.random.default_rng(seed)
    height, width = size
    for folder in LAYOUT_FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"{prefix}_{i:03d}.png"
        arrays = {
            "original": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "synthesis": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        }
        semantic = rng.integers(0, 19, (height, width), dtype=np.uint8)
        semantic[: height // 8] = 255
        label = np.zeros((height, width), dtype=np.uint8)
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        label[y:y + height // 3, x:x + width // 3] = 1
        label[-2:] = 255
        arrays.update(semantic=semantic, labels=label)
        for folder in ("entropy", "logit_distance", "mae_features"):
            arrays[folder] = rng.integers(0, 256, (height, width), dtype=np.uint8)
        for folder, array in arrays.items():
            Image.fromarray(array).save(root / folder / name)
    return root


def _read(root: Path, folder: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / folder / name))


def test_sample_values_match_files(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "v", 2)
    dataset = LayoutDataset(root, (32, 64), domain=1)
    sample = dataset[1]
    name = "img_001.png"
    assert sample["name"] == name and sample["domain"] == 1
    expected_image = ((_read(root, "original", name) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(sample["image"].numpy(), expected_image, rtol=1e-5, atol=1e-5)
    expected_syn = ((_read(root, "synthesis", name) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(sample["synthesis"].numpy(), expected_syn, rtol=1e-5, atol=1e-5)
    semantic = _read(root, "semantic", name)
    one_hot = sample["semantic"].numpy()
    assert one_hot.shape == (19, 32, 64) and sample["semantic"].dtype == torch.float32
    for c in (0, 7, 18):
        np.testing.assert_array_equal(one_hot[c], (semantic == c).astype(np.float32))
    np.testing.assert_array_equal(one_hot.sum(0), (semantic != 255).astype(np.float32))  # void = all zeros
    prior = np.stack([_read(root, f, name) for f in ("entropy", "logit_distance", "mae_features")]) / 255.0
    np.testing.assert_allclose(sample["prior"].numpy(), prior, atol=1e-7)
    assert sample["label"].dtype == torch.int64
    np.testing.assert_array_equal(sample["label"].numpy(), _read(root, "labels", name))


def test_nearest_resize_and_shared_flip(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "v", 1, size=(16, 32))
    dataset = LayoutDataset(root, (32, 64))
    plain, flipped = dataset[(0, False)], dataset[(0, True)]
    # 2x upscaling with nearest repeats every pixel into a 2x2 block.
    label = _read(root, "labels", "img_000.png")
    np.testing.assert_array_equal(plain["label"].numpy(), label.repeat(2, 0).repeat(2, 1))
    assert set(np.unique(plain["label"].numpy())) <= {0, 1, 255}
    for key in ("image", "synthesis", "semantic", "prior", "label"):
        assert plain[key].shape[-2:] == (32, 64)
        torch.testing.assert_close(flipped[key], plain[key].flip(-1), rtol=0, atol=0)


def test_mismatched_folders_name_first_offending_file(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "v", 4)
    (root / "entropy" / "img_002.png").unlink()
    (root / "entropy" / "img_003.png").unlink()
    with pytest.raises(LayoutError, match=r"entropy: missing img_002\.png"):
        LayoutDataset(root, (32, 64))
    root2 = write_layout(tmp_path / "a", 2)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(root2 / "labels" / "img_000b.png")
    with pytest.raises(LayoutError, match=r"labels: extra file img_000b\.png"):
        list_layout(root2)


def test_empty_or_incomplete_domain_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    for folder in LAYOUT_FOLDERS:
        (root / folder).mkdir(parents=True)
    with pytest.raises(LayoutError, match="empty"):
        list_layout(root)
    partial = write_layout(tmp_path / "partial", 1)
    for path in (partial / "mae_features").iterdir():
        path.unlink()
    (partial / "mae_features").rmdir()
    with pytest.raises(LayoutError, match="missing layout folder mae_features"):
        list_layout(partial)


def test_bad_label_value_names_file(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "v", 1)
    label = _read(root, "labels", "img_000.png").copy()
    label[5, 5] = 7
    Image.fromarray(label).save(root / "labels" / "img_000.png")
    with pytest.raises(LayoutError, match=r"labels/img_000\.png: label has value 7"):
        LayoutDataset(root, (32, 64))[0]


def _all_batches(sampler: DomainBatchSampler, epoch: int, start: int = 0) -> list[list[tuple]]:
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_sampler_balanced_deterministic_and_cycles_smaller_domain() -> None:
    sampler = DomainBatchSampler([10, 4], per_domain=2, seed=3)
    assert sampler.steps_per_epoch == 5
    epoch0 = _all_batches(sampler, 0)
    assert len(epoch0) == 5
    for batch in epoch0:
        assert [key[0] for key in batch] == [0, 0, 1, 1]  # 2 V then 2 A
    v = [key[1] for batch in epoch0 for key in batch if key[0] == 0]
    a = [key[1] for batch in epoch0 for key in batch if key[0] == 1]
    assert sorted(v) == list(range(10))  # the larger domain: each sample once per epoch
    assert sorted(a[:4]) == list(range(4)) and sorted(a[4:8]) == list(range(4))  # smaller domain cycled
    assert _all_batches(sampler, 0) == epoch0
    assert _all_batches(DomainBatchSampler([10, 4], 2, seed=3), 0) == epoch0  # a new sampler: same order
    assert _all_batches(sampler, 1) != epoch0
    assert _all_batches(DomainBatchSampler([10, 4], 2, seed=4), 0) != epoch0
    flips = [key[2] for batch in epoch0 for key in batch]
    assert any(flips) and not all(flips)
    assert not any(k[2] for b in _all_batches(DomainBatchSampler([10, 4], 2, seed=3, hflip=False), 0) for k in b)
    assert _all_batches(sampler, 0, start=3) == epoch0[3:]  # resuming mid-epoch


def test_sampler_ranks_split_each_global_batch() -> None:
    single = DomainBatchSampler([12, 12], per_domain=4, seed=0)
    ranks = [DomainBatchSampler([12, 12], per_domain=2, seed=0, rank=r, world_size=2) for r in range(2)]
    assert single.steps_per_epoch == ranks[0].steps_per_epoch == 3
    whole = _all_batches(single, 2)
    parts = [_all_batches(s, 2) for s in ranks]
    for step, batch in enumerate(whole):
        rank_keys = [set(parts[r][step]) for r in range(2)]
        assert not rank_keys[0] & rank_keys[1]
        assert rank_keys[0] | rank_keys[1] == set(batch)
    with pytest.raises(ValueError, match="fewer than one step"):
        DomainBatchSampler([3, 3], per_domain=2, seed=0, world_size=2)


def test_multi_domain_dataset_collates_with_domain_ids(tmp_path: Path) -> None:
    v = LayoutDataset(write_layout(tmp_path / "v", 3, seed=1), (32, 64), domain=0)
    a = LayoutDataset(write_layout(tmp_path / "a", 2, seed=2, prefix="mix"), (32, 64), domain=1)
    sampler = DomainBatchSampler([3, 2], per_domain=2, seed=0)
    loader = torch.utils.data.DataLoader(MultiDomainDataset([v, a]), batch_sampler=sampler)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 64) and batch["label"].shape == (4, 32, 64)
    assert batch["domain"].tolist() == [0, 0, 1, 1]
    assert [n[:3] for n in batch["name"]] == ["img", "img", "mix", "mix"]


def test_worker_processes_give_the_same_batches(tmp_path: Path) -> None:
    v = LayoutDataset(write_layout(tmp_path / "v", 4, seed=1), (32, 64), domain=0)
    a = LayoutDataset(write_layout(tmp_path / "a", 4, seed=2, prefix="mix"), (32, 64), domain=1)
    dataset, sampler = MultiDomainDataset([v, a]), DomainBatchSampler([4, 4], per_domain=2, seed=5)
    serial = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=0))
    parallel = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=2))
    assert len(serial) == len(parallel) == 2
    for one, other in zip(serial, parallel):
        assert one["name"] == other["name"]
        for key in ("image", "semantic", "prior", "label", "domain"):
            assert torch.equal(one[key], other[key])
