"""Synboost's training layout (docs/DATA.md) as a dataset, and the deterministic two-domain batch order.

``<root>/{original,synthesis,semantic,labels,entropy,logit_distance,mae_features}/<same names>.png``:
RGB image and resynthesis, uint8 train ids (255 = void), uint8 labels {0 normal, 1 anomaly, 255 ignore}, three
uint8 uncertainty maps (value / 255).

Data order is a pure function of (seed, epoch, domain): every epoch each domain is shuffled with
``numpy.random.default_rng((seed, epoch, domain))`` and so are the flips. A run resumed at step s therefore sees
exactly the batches an uninterrupted run would, with no sampler state to save. Under DDP each rank takes its own
disjoint share of every step's global batch (a distributed sampler per domain).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from mgcda_core.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES
from mgcda_core.errors import DataError
from mgcda_core.utils.images import read_label, read_rgb, resize_nearest

IMAGE_FOLDERS = ("original", "synthesis")
SEMANTIC_FOLDER = "semantic"
LABEL_FOLDER = "labels"
PRIOR_FOLDERS = ("entropy", "logit_distance", "mae_features")  # order of the prior's channels
LAYOUT_FOLDERS = (*IMAGE_FOLDERS, SEMANTIC_FOLDER, LABEL_FOLDER, *PRIOR_FOLDERS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# A sample key: (domain position in the MultiDomainDataset, index in that domain, horizontal flip).
SampleKey = tuple[int, int, bool]


class LayoutError(DataError):
    """A training-layout folder is missing, empty or inconsistent; the message names the folder and file."""


def list_layout(root: str | os.PathLike[str]) -> list[str]:
    """Check the layout under ``root`` and return its sorted file names (identical across all folders)."""
    root = Path(root)
    listings: dict[str, list[str]] = {}
    for folder in LAYOUT_FOLDERS:
        path = root / folder
        if not path.is_dir():
            raise LayoutError(f"{root}: missing layout folder {folder}/ (expected {', '.join(LAYOUT_FOLDERS)})")
        listings[folder] = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    names = listings[IMAGE_FOLDERS[0]]
    if not names:
        raise LayoutError(f"{root / IMAGE_FOLDERS[0]}: no images (.png/.jpg); the domain is empty")
    reference = set(names)
    for folder, listing in listings.items():
        if listing == names:
            continue
        others = set(listing)
        missing = sorted(reference - others)
        extra = sorted(others - reference)
        if missing and (not extra or missing[0] < extra[0]):
            raise LayoutError(f"{root / folder}: missing {missing[0]} (present in {IMAGE_FOLDERS[0]}/); "
                              f"{len(missing)} file(s) missing there, {len(extra)} extra")
        raise LayoutError(f"{root / folder}: extra file {extra[0]} has no counterpart in {IMAGE_FOLDERS[0]}/; "
                          f"{len(missing)} file(s) missing there, {len(extra)} extra")
    return names


def _check_values(array: np.ndarray, allowed: np.ndarray, path: Path, what: str) -> None:
    bad = ~np.isin(array, allowed)
    if bad.any():
        raise LayoutError(f"{path}: {what} has value {int(array[bad][0])}, expected {what} values in "
                          f"{_describe_allowed(allowed)}")


def _describe_allowed(allowed: np.ndarray) -> str:
    if len(allowed) > 4:
        return f"0..{NUM_CLASSES - 1} or {IGNORE_INDEX}"
    return "{" + ", ".join(str(int(v)) for v in allowed) + "}"


_LABEL_VALUES = np.array([0, 1, IGNORE_INDEX])
_SEMANTIC_VALUES = np.array([*range(NUM_CLASSES), IGNORE_INDEX])


class LayoutDataset(Dataset):
    """One domain of the training layout. ``dataset[(index, flip)]`` (or ``dataset[index]``) returns a dict:

    image, synthesis: 3 x H x W float32, ImageNet-normalised; semantic: 19 x H x W float32 one-hot (void = all
    zeros); prior: 3 x H x W float32 in [0, 1] (entropy, softmax distance, perceptual difference); label: H x W
    int64 in {0, 1, 255}; name: file name; domain: the domain id given. Everything is resized to ``input_size``
    (height, width) with nearest interpolation (as Synboost) and flipped together.
    """

    def __init__(self, root: str | os.PathLike[str], input_size: tuple[int, int], domain: int = 0) -> None:
        self.root = Path(root)
        height, width = input_size
        self.input_size = (height, width)
        self.domain = domain
        self.names = list_layout(self.root)
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict:
        index, flip = (key, False) if isinstance(key, int) else key
        name = self.names[index]
        original = read_rgb(self.root / IMAGE_FOLDERS[0] / name)
        size = original.shape[:2]
        images = [resize_nearest(original, self.input_size),
                  *(self._read(folder, name, read_rgb, size) for folder in IMAGE_FOLDERS[1:])]
        semantic = self._read(SEMANTIC_FOLDER, name, read_label, size)
        _check_values(semantic, _SEMANTIC_VALUES, self.root / SEMANTIC_FOLDER / name, "semantic")
        label = self._read(LABEL_FOLDER, name, read_label, size)
        _check_values(label, _LABEL_VALUES, self.root / LABEL_FOLDER / name, "label")
        prior = np.stack([self._read(folder, name, read_label, size) for folder in PRIOR_FOLDERS])
        sample = {
            "image": self._normalise(images[0]),
            "synthesis": self._normalise(images[1]),
            "semantic": self._one_hot(semantic),
            "prior": torch.from_numpy(prior.astype(np.float32) / 255.0),
            "label": torch.from_numpy(label.astype(np.int64)),
        }
        if flip:
            sample = {k: v.flip(-1) for k, v in sample.items()}
        return {**sample, "name": name, "domain": self.domain}

    def _read(self, folder: str, name: str, reader: Callable[[Path], np.ndarray],
              size: tuple[int, ...]) -> np.ndarray:
        """One map of a frame, resized to the input size; it must have the ``size`` of the frame's image (a
        smaller label resized up would silently misplace every anomaly)."""
        path = self.root / folder / name
        array = reader(path)
        if array.shape[:2] != size:
            raise LayoutError(f"{path}: size {array.shape[1]}x{array.shape[0]} differs from its image "
                              f"{IMAGE_FOLDERS[0]}/{name} ({size[1]}x{size[0]})")
        return resize_nearest(array, self.input_size)

    def _normalise(self, rgb: np.ndarray) -> torch.Tensor:
        image = torch.tensor(rgb).permute(2, 0, 1).float() / 255.0  # copy: PIL arrays are read-only
        return (image - self._mean) / self._std

    @staticmethod
    def _one_hot(semantic: np.ndarray) -> torch.Tensor:
        ids = torch.from_numpy(semantic.astype(np.int64))
        ids[ids == IGNORE_INDEX] = NUM_CLASSES  # an extra class that is dropped: void is all zeros
        return F.one_hot(ids, NUM_CLASSES + 1)[..., :NUM_CLASSES].permute(2, 0, 1).float()


class MultiDomainDataset(Dataset):
    """Several LayoutDatasets addressed by ``(domain position, index, flip)`` keys (see DomainBatchSampler)."""

    def __init__(self, domains: Sequence[LayoutDataset]) -> None:
        self.domains = list(domains)

    def __len__(self) -> int:
        return sum(len(d) for d in self.domains)

    def __getitem__(self, key: SampleKey) -> dict:
        position, index, flip = key
        return self.domains[position][(index, flip)]


class DomainBatchSampler:
    """Batches of SampleKeys: each step takes ``per_domain`` samples from every domain for this rank.

    An epoch has ``max(len) // (per_domain * world_size)`` steps; smaller domains are cycled through further
    fresh permutations so that every step stays balanced. ``set_epoch(epoch, start_step)`` selects the epoch and
    where in it to start (for resuming). Order and flips depend only on (seed, epoch, domain).
    """

    def __init__(self, lengths: Sequence[int], per_domain: int, seed: int, hflip: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        if not lengths or min(lengths) < 1:
            raise DataError(f"every domain needs at least one sample, got lengths {list(lengths)}")
        self.lengths = list(lengths)
        self.per_domain = per_domain
        self.seed = seed
        self.hflip = hflip
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = max(self.lengths) // (per_domain * world_size)
        if self.steps_per_epoch < 1:
            raise DataError(f"the largest domain has {max(self.lengths)} samples, fewer than one step needs "
                            f"({per_domain} per domain x {world_size} process(es))")
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside the epoch's {self.steps_per_epoch} steps")
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def _order(self, domain: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, domain))
        needed = self.steps_per_epoch * self.per_domain * self.world_size
        length = self.lengths[domain]
        passes = -(-needed // length)
        order = np.concatenate([rng.permutation(length) for _ in range(passes)])[:needed]
        flips = rng.random(needed) < 0.5 if self.hflip else np.zeros(needed, dtype=bool)
        return order, flips

    def __iter__(self) -> Iterator[list[SampleKey]]:
        orders = [self._order(d) for d in range(len(self.lengths))]
        for step in range(self.start_step, self.steps_per_epoch):
            begin = (step * self.world_size + self.rank) * self.per_domain
            batch: list[SampleKey] = []
            for domain, (order, flips) in enumerate(orders):
                batch += [(domain, int(i), bool(f)) for i, f in
                          zip(order[begin:begin + self.per_domain], flips[begin:begin + self.per_domain])]
            yield batch

