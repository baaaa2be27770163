"""Build MGCDA's two training domains in Synboost's layout (docs/DATA.md), from the official datasets or from real
data in the train_real format:

``python -m mgcda_core.prepare --cityscapes ROOT --coco ROOT --out DIR [--split train] [--size 256x512] ...``
``python -m mgcda_core.prepare --train-real ROOT --out DIR [--variants 2] ...``

Official datasets: ``DIR/voidclass`` from Cityscapes void objects, ``DIR/anomalymix`` from pasted COCO objects.
Real data (``ROOT`` holds ``cityscapes_pix2pix/``, ``camvid/`` and ``objects/``, see docs/DATA.md):
``DIR/voidclass`` (Cityscapes train, VoidClass rule), ``DIR/anomalymix`` (Cityscapes and CamVid train frames with
real object cut-outs pasted, ``--variants`` versions each) and ``DIR/val_anomalymix`` (Cityscapes val with pasted
objects whose identities training never sees: the validation set for choosing checkpoints and scores).

Every frame is resized to the network size (nearest neighbour for the official datasets, as Synboost does), run
through ``InferenceStages`` in batches, and written as ``original/ synthesis/ semantic/ labels/ entropy/
logit_distance/ mae_features/`` PNGs with the same file name ``<frame name>.png``. Each file is written
atomically; a frame whose seven files all exist is skipped, so an interrupted run resumes where it stopped.
``DIR/summary.json`` holds the counts and anomaly-pixel ratios per domain.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from mgcda_core.constants import DEFAULT_INPUT_SIZE, IGNORE_INDEX
from mgcda_core.data.anomalymix import AnomalyMix, AnomalyMixConfig
from mgcda_core.data.camvid import CamVid
from mgcda_core.data.cityscapes import LabelledFrame
from mgcda_core.data.cityscapes_pix2pix import CityscapesPix2Pix
from mgcda_core.data.layout import LABEL_FOLDER, LAYOUT_FOLDERS, PRIOR_FOLDERS, SEMANTIC_FOLDER
from mgcda_core.data.objects import coco_yolo_objects, figure_ground_objects, mask_folder_objects, split_identities
from mgcda_core.data.real_domains import (
    BackgroundSource,
    CamVidBackgrounds,
    PasteConfig,
    Pix2PixBackgrounds,
    RealAnomalyMix,
    RealVoidClass,
)
from mgcda_core.data.voidclass import VoidClass, VoidClassConfig
from mgcda_core.errors import ConfigError, shorten
from mgcda_core.pipeline.stages import InferenceStages, StageOutputs
from mgcda_core.utils.atomic import atomic_write_json
from mgcda_core.utils.cli import parse_size, user_errors
from mgcda_core.utils.devices import check_device
from mgcda_core.utils.images import read_label, resize_nearest, write_png

DOMAINS = ("voidclass", "anomalymix")  # also the folder names under --out
REAL_DOMAINS = (*DOMAINS, "val_anomalymix")  # --train-real adds the validation domain
HOLD_OUT_EVERY = 5  # --train-real: every 5th object identity per source is kept for validation


class NamedFrame(Protocol):
    @property
    def name(self) -> str: ...


class DomainSource(Protocol):
    @property
    def frames(self) -> Sequence[NamedFrame]: ...

    def __getitem__(self, index: int) -> LabelledFrame: ...


@dataclass(frozen=True)
class PrepareConfig:
    cityscapes: Path | None
    coco: Path | None
    out: Path
    split: str = "train"
    coco_split: str = "train2017"
    size: tuple[int, int] = DEFAULT_INPUT_SIZE  # (height, width) of the written frames
    batch_size: int = 4
    seed: int = 0
    limit: int | None = None                   # first N Cityscapes frames (by name) per domain
    coco_min_size: int = 480                   # PEBAL; the procedural mini COCO needs less (procedural.json says)
    void_anomaly_classes: tuple[str, ...] = ("dynamic",)
    domains: tuple[str, ...] = DOMAINS
    device: str = "cpu"
    train_real: Path | None = None             # real-data root instead of --cityscapes/--coco
    variants: int = 2                          # --train-real: AnomalyMix versions of every background
    shard: tuple[int, int] = (1, 1)            # (k, n): compute only frames i with i % n == k - 1

    def __post_init__(self) -> None:
        if (self.train_real is None) == (self.cityscapes is None or self.coco is None):
            raise ValueError("give either --train-real or both --cityscapes and --coco")
        if not 1 <= self.shard[0] <= self.shard[1]:
            raise ValueError(f"shard must be K/N with 1 <= K <= N, got {self.shard[0]}/{self.shard[1]}")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 when given, got {self.limit}")
        if min(self.size) < 8:
            raise ValueError(f"size must be at least 8x8, got {self.size[0]}x{self.size[1]}")
        known = DOMAINS if self.train_real is None else REAL_DOMAINS
        unknown = [domain for domain in self.domains if domain not in known]
        if unknown or not self.domains:
            raise ValueError(f"domains {list(self.domains)}: expected a non-empty subset of {list(known)}")


@dataclass
class DomainSummary:
    root: str
    frames: int = 0          # frames selected (after --limit)
    written: int = 0         # frames computed in this run
    skipped: int = 0         # frames already complete
    anomaly_pixels: int = 0  # label 1, over all selected frames (written and skipped)
    normal_pixels: int = 0   # label 0
    ignore_pixels: int = 0   # label 255
    anomaly_ratio: float = 0.0  # anomaly / (anomaly + normal): the share of valid pixels that are anomalous
    frames_with_anomaly: int = 0
    unfinished: int = 0      # frames of the selection not written yet (other shards', or an interrupted run's)


def frame_files(domain_root: Path, name: str) -> list[Path]:
    """The seven files of a frame in the layout."""
    return [domain_root / folder / f"{name}.png" for folder in LAYOUT_FOLDERS]


def frame_done(domain_root: Path, name: str) -> bool:
    """A frame is finished when all seven files exist (each was written atomically, so none is partial)."""
    return all(path.is_file() for path in frame_files(domain_root, name))


def to_uint8(values: torch.Tensor) -> np.ndarray:
    """[0, 1] floats → uint8 value * 255, rounded (read back as value / 255)."""
    return (values.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def write_frame(domain_root: Path, name: str, image: np.ndarray, label: np.ndarray, outputs: StageOutputs,
                index: int) -> None:
    """Write the seven layout files of batch element ``index`` (each atomically)."""
    write_png(domain_root / "original" / f"{name}.png", image)
    write_png(domain_root / "synthesis" / f"{name}.png", to_uint8(outputs.synthesis[index]).transpose(1, 2, 0))
    write_png(domain_root / SEMANTIC_FOLDER / f"{name}.png", outputs.semantic[index].to(torch.uint8).cpu().numpy())
    for channel, folder in enumerate(PRIOR_FOLDERS):
        write_png(domain_root / folder / f"{name}.png", to_uint8(outputs.uncertainty[index, channel]))
    write_png(domain_root / LABEL_FOLDER / f"{name}.png", label)


def prepare_domain(source: DomainSource, domain_root: Path, stages: torch.nn.Module, config: PrepareConfig,
                   desc: str) -> DomainSummary:
    """Compute and write every unfinished frame of ``source`` (up to ``config.limit``), then summarise."""
    frames = source.frames[: config.limit]
    shard, shards = config.shard
    selected = [index for index in range(len(frames)) if index % shards == shard - 1]
    todo = [index for index in selected if not frame_done(domain_root, frames[index].name)]
    summary = DomainSummary(str(domain_root), frames=len(frames), skipped=len(selected) - len(todo))
    device = torch.device(config.device)
    with tqdm(total=len(selected), initial=summary.skipped, desc=desc, unit="frame", file=sys.stderr) as progress:
        for start in range(0, len(todo), config.batch_size):
            batch = [source[index] for index in todo[start:start + config.batch_size]]
            images = [resize_nearest(frame.image, config.size) for frame in batch]
            labels = [resize_nearest(frame.label, config.size) for frame in batch]
            tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(device, torch.float32) / 255.0
            with torch.inference_mode():
                outputs = stages(tensor)
            for index, labelled in enumerate(batch):
                write_frame(domain_root, labelled.name, images[index], labels[index], outputs, index)
            summary.written += len(batch)
            progress.update(len(batch))
    for frame in frames:  # statistics over every finished frame of the selection, resumed ones included
        if not frame_done(domain_root, frame.name):
            summary.unfinished += 1
            continue
        label = read_label(domain_root / LABEL_FOLDER / f"{frame.name}.png")
        anomaly = int(np.count_nonzero(label == 1))
        summary.anomaly_pixels += anomaly
        summary.normal_pixels += int(np.count_nonzero(label == 0))
        summary.ignore_pixels += int(np.count_nonzero(label == IGNORE_INDEX))
        summary.frames_with_anomaly += int(anomaly > 0)
    valid = summary.anomaly_pixels + summary.normal_pixels
    summary.anomaly_ratio = summary.anomaly_pixels / valid if valid else 0.0
    return summary


# Settings that change the written bytes: a resumed run must use the same ones.
OUTPUT_SETTINGS = ("split", "coco_split", "size", "seed", "coco_min_size", "void_anomaly_classes", "variants")


def check_resume_settings(config: PrepareConfig, overwrite: bool = False) -> None:
    """Record the output-defining settings in ``OUT/prepare.json``; refuse to resume with different ones unless
    ``overwrite``, which removes the previous preparation's domain folders first."""
    path = config.out / "prepare.json"
    current = json.loads(json.dumps({key: getattr(config, key) for key in OUTPUT_SETTINGS}))
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = [f"{key}: {shorten(previous.get(key))} -> {current[key]}" for key in OUTPUT_SETTINGS
                   if previous.get(key) != current[key]]
        if changed and not overwrite:
            raise ConfigError(f"{config.out} was prepared with other settings ({'; '.join(changed)}); resuming would "
                              "mix them: use a new --out, the previous settings, or --overwrite to replace it")
        if not changed:
            return
        for domain in REAL_DOMAINS:
            shutil.rmtree(config.out / domain, ignore_errors=True)
    atomic_write_json(path, current)


def build_source(domain: str, config: PrepareConfig) -> DomainSource:
    """The frame source of ``domain`` for ``config``."""
    if config.train_real is not None:
        return build_real_source(domain, config.train_real, config)
    assert config.cityscapes is not None and config.coco is not None  # checked by PrepareConfig
    if domain == "voidclass":
        return VoidClass(config.cityscapes, config.split, VoidClassConfig(config.void_anomaly_classes))
    return AnomalyMix(config.cityscapes, config.coco, config.split, config.coco_split,
                      AnomalyMixConfig(min_size=config.coco_min_size, seed=config.seed))


def build_real_source(domain: str, root: Path, config: PrepareConfig) -> DomainSource:
    """V, A or the validation A from the train_real layout (``mgcda_core.data.real_domains``)."""
    objects_root = root / "objects"
    objects = (coco_yolo_objects(objects_root / "coco128_seg") + mask_folder_objects(objects_root / "davis2016")
               + figure_ground_objects(objects_root / "weizmann_horses"))
    training_objects, held_out = split_identities(objects, HOLD_OUT_EVERY)
    cityscapes = root / "cityscapes_pix2pix"
    if domain == "voidclass":
        return RealVoidClass(CityscapesPix2Pix(cityscapes, "train", config.size),
                             VoidClassConfig(config.void_anomaly_classes))
    if domain == "anomalymix":
        backgrounds: list[BackgroundSource] = [Pix2PixBackgrounds(CityscapesPix2Pix(cityscapes, "train", config.size)),
                       CamVidBackgrounds(CamVid(root / "camvid", "train"), config.size)]
        return RealAnomalyMix(backgrounds, training_objects, PasteConfig(variants=config.variants, seed=config.seed))
    return RealAnomalyMix([Pix2PixBackgrounds(CityscapesPix2Pix(cityscapes, "val", config.size))], held_out,
                          PasteConfig(variants=1, seed=config.seed + 1))


def prepare(config: PrepareConfig, stages: torch.nn.Module | None = None, overwrite: bool = False) -> dict:
    """Build every domain of ``config`` under ``config.out``; write and return the summary.

    ``stages`` defaults to ``InferenceStages.default()`` (embedded/offline weights only), the module the
    inference graph uses, so training inputs are computed exactly as deployment inputs.
    """
    sources = {domain: build_source(domain, config) for domain in config.domains}  # fail early on bad input
    check_resume_settings(config, overwrite)
    if stages is None:
        stages = InferenceStages.default()
    stages = stages.to(config.device).eval()
    domains = {}
    for domain, source in sources.items():
        domains[domain] = asdict(prepare_domain(source, config.out / domain, stages, config, desc=domain))
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(config).items()}
    result = {"config": settings, "perceptual_weights": getattr(stages, "perceptual_source", "unknown"),
              "domains": domains}
    atomic_write_json(config.out / "summary.json", result)
    return result



def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 1/2), got {text!r}") from None
    return k, n


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cityscapes", type=Path, help="Cityscapes root (leftImg8bit/, gtFine/)")
    parser.add_argument("--coco", type=Path, help="COCO root (annotations/, <coco-split>/)")
    parser.add_argument("--train-real", type=Path,
                        help="real-data root (cityscapes_pix2pix/, camvid/, objects/) instead of --cityscapes/--coco")
    parser.add_argument("--variants", type=int, default=2,
                        help="--train-real: AnomalyMix versions of every background (default 2)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per domain)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a preparation in --out made with other settings (the same settings resume)")
    parser.add_argument("--split", default="train", help="Cityscapes split (default train)")
    parser.add_argument("--coco-split", default="train2017", help="COCO split (default train2017)")
    parser.add_argument("--size", type=parse_size, default=DEFAULT_INPUT_SIZE, help="output size HxW (256x512)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="AnomalyMix object choice and position")
    parser.add_argument("--limit", type=int, default=None, help="only the first N frames (by name) per domain")
    parser.add_argument("--coco-min-size", type=int, default=480, help="minimum COCO image side (PEBAL: 480)")
    parser.add_argument("--void-anomaly-classes", nargs="+", default=["dynamic"],
                        help="Cityscapes void classes labelled anomalous in VoidClass (Synboost: dynamic)")
    parser.add_argument("--domains", nargs="+", choices=REAL_DOMAINS,
                        help=f"domains to build (default {' '.join(DOMAINS)}; with --train-real also val_anomalymix)")
    parser.add_argument("--device", default="cpu", help="torch device for the inference stages")
    parser.add_argument("--shard", type=parse_shard, default=(1, 1), metavar="K/N",
                        help="compute only every N-th frame starting at the K-th, so N processes can share the "
                             "work (each frame is written atomically; the summary counts only finished frames)")
    args = parser.parse_args(argv)
    try:
        config = PrepareConfig(args.cityscapes, args.coco, args.out, args.split, args.coco_split, args.size,
                               args.batch_size, args.seed, args.limit, args.coco_min_size,
                               tuple(args.void_anomaly_classes),
                               tuple(args.domains or (REAL_DOMAINS if args.train_real else DOMAINS)), args.device,
                               args.train_real, args.variants, args.shard)
    except ValueError as error:
        parser.error(str(error))
    check_device(args.device)
    result = prepare(config, overwrite=args.overwrite)
    for domain, summary in result["domains"].items():
        unfinished = f", {summary['unfinished']} not finished" if summary["unfinished"] else ""
        print(f"{domain}: {summary['frames']} frames ({summary['written']} written, {summary['skipped']} already "
              f"done{unfinished}), {summary['frames_with_anomaly']} with anomalies, anomaly pixels {summary['anomaly_ratio']:.4%} "
              f"of valid, ignored {summary['ignore_pixels']} px -> {summary['root']}")
    print(f"summary: {config.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
