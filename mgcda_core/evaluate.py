"""``python -m mgcda_core.evaluate``: anomaly-segmentation metrics of a detector on an evaluation set.

    python -m mgcda_core.evaluate --dataset road_anomaly --root ../shared/data/road_anomaly_dev \\
        --score max_logit --out runs/eval_max_logit [--protocol fishyscapes|smiyc] [--checkpoint C] [--limit N]

Writes ``metrics.json`` (AP, FPR95, AUROC as fractions, counts, protocol, model), ``frames.json`` (per-frame
AP/FPR95), ``pr_curve.png``, ``roc_curve.png`` and ``gallery/`` (image / ground truth / score / overlay of the
best and worst frames by per-frame AP; ``gallery.png`` plus one PNG per panel). Metrics use the detector's raw
score (``--calibrated`` uses its [0, 1] calibration, needed for SegmentMeIfYouCan's uniform bins).

This module is the command: it builds the detector (``mgcda_core.pipeline``) and runs it over an evaluation set
(``mgcda_core.data.eval_sets``); the metrics, the ``metrics.json`` writer, plots and gallery are the package
``mgcda_core.evaluation``, which knows nothing of detectors (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeGuard

import numpy as np
from tqdm import tqdm

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.data.eval_sets import EVAL_SETS, EvalSet, open_eval_set
from mgcda_core.errors import DataError
from mgcda_core.evaluation import (
    ComponentAccumulator,
    MetricAccumulator,
    frame_metrics,
    write_metrics,
)
from mgcda_core.evaluation.bootstrap import bootstrap_intervals
from mgcda_core.evaluation.components import TRACK_SIZE_FILTERS, Track
from mgcda_core.evaluation.gallery import FrameSelector, GalleryFrame, write_gallery
from mgcda_core.evaluation.plots import write_curve_plots
from mgcda_core.evaluation.skips import SkippedFrames
from mgcda_core.model.shipped import SHIPPED_SCORE
from mgcda_core.pipeline.detector import Detector, check_input_size
from mgcda_core.pipeline.scores import SCORES
from mgcda_core.utils.atomic import atomic_write_json
from mgcda_core.utils.cli import user_errors
from mgcda_core.utils.devices import check_device


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(EVAL_SETS), help="evaluation set layout")
    parser.add_argument("--root", required=True, type=Path, help="root folder of the evaluation set")
    parser.add_argument("--score", default=None, choices=SCORES,
                        help="anomaly score (default: dissimilarity with --checkpoint, else the shipped network's)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--protocol", default="fishyscapes", choices=("fishyscapes", "smiyc"),
                        help="fishyscapes: exact pixel metrics; smiyc: binned pixel metrics + component metrics")
    parser.add_argument("--bins", default="percentiles", choices=("percentiles", "uniform"),
                        help="SegmentMeIfYouCan bin variant: 768 percentile bins or 4096 uniform bins on [0, 1]")
    parser.add_argument("--track", default=None, choices=("anomaly", "obstacle"),
                        help="component size filters (default: the data set's track, anomaly otherwise)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained mgcda checkpoint (dissimilarity net)")
    parser.add_argument("--sml-stats", type=Path, default=None, help="SML statistics JSON (score sml)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=list(DEFAULT_INPUT_SIZE),
                        help="network input size (multiples of 32)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    parser.add_argument("--gallery", type=int, default=3, help="number of best and of worst frames shown")
    parser.add_argument("--calibrated", action="store_true", help="evaluate the calibrated [0, 1] score")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="also a 95%% interval of AP/FPR95/AUROC from N resamples of the frames (keeps every "
                             "score map in memory: 5 bytes a pixel; e.g. 1000 for 20 RoadAnomaly frames)")
    parser.add_argument("--allow-skips", action="store_true",
                        help="accept frames that cannot be read (listed in metrics.json) instead of failing")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.gallery < 0:
        parser.error(f"--gallery must be >= 0, got {args.gallery}")
    if args.bootstrap < 0:
        parser.error(f"--bootstrap must be >= 0, got {args.bootstrap}")
    try:
        check_input_size(tuple(args.input_size))
    except ValueError as error:
        parser.error(f"--input-size: {error}")
    if args.score is None:
        args.score = "dissimilarity" if args.checkpoint is not None else SHIPPED_SCORE
    return args


def build_detector(args: argparse.Namespace) -> Detector:
    size = tuple(args.input_size)
    check_device(args.device)
    if args.checkpoint is not None:
        return Detector.from_checkpoint(args.checkpoint, score=args.score, input_size=size, device=args.device,
                                        sml_stats=args.sml_stats)
    return Detector.default(score=args.score, input_size=size, device=args.device, sml_stats=args.sml_stats)


def evaluate(args: argparse.Namespace) -> dict:
    """Run the evaluation described by ``args``; returns the metrics written to ``metrics.json``."""
    dataset: EvalSet = open_eval_set(args.dataset, args.root)
    if dataset.num_unlabelled:
        print(f"{dataset.num_unlabelled} images under {dataset.root} have no label file and are left out "
              "(SegmentMeIfYouCan publishes labels for its validation frames only)")
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    detector = build_detector(args)
    score_fn = detector if args.calibrated else detector.raw_score
    accumulator = MetricAccumulator(args.protocol, bins=args.bins)
    selector = FrameSelector(args.gallery)
    per_frame: list[dict] = []
    kept: list[tuple[np.ndarray, np.ndarray]] = []  # (score, label) per frame, for --bootstrap
    skipped = SkippedFrames()
    scored: list[int] = []
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix=".scores.", dir=args.out) as cache:
        # SegmentMeIfYouCan's component threshold is known only after all frames: keep the scores on disk
        cache_dir = Path(cache) if args.protocol == "smiyc" else None
        start = time.perf_counter()
        for index in tqdm(range(count), desc=f"{args.dataset} / {args.score}", unit="frame"):
            try:
                sample = dataset[index]
            except DataError as error:  # unreadable image or label: named, counted, and a failure at the end
                skipped.add(dataset.frames[index].name, str(error))
                continue
            scored.append(index)
            score = score_fn(sample.image)
            accumulator.add(score, sample.label, frame=sample.name)
            metrics = frame_metrics(score, sample.label)
            per_frame.append({"name": sample.name, **(metrics or {"AP": None, "FPR95": None})})
            if metrics is not None:
                selector.offer(GalleryFrame(sample.name, sample.image, sample.label, score, metrics["AP"]))
            if cache_dir is not None:
                np.save(cache_dir / f"{index}.npy", score)
            if args.bootstrap:
                kept.append((score.astype(np.float32), sample.label))
        wall = time.perf_counter() - start
        result = accumulator.result()

        extra: dict = {
            "dataset": args.dataset,
            "root": str(args.root),
            "score": args.score,
            "calibrated": bool(args.calibrated),
            "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "model": detector.info,
            "wall_time_s": round(wall, 3),
            "frames_per_second": round(len(scored) / wall, 4) if wall > 0 else None,
            **skipped.as_metrics(),
        }
        if args.bootstrap:
            extra["bootstrap_95"] = bootstrap_intervals([k[0] for k in kept], [k[1] for k in kept], args.bootstrap)
        if cache_dir is not None:
            track = args.track or dataset.track
            if not _is_track(track):
                raise ValueError(f"unknown SegmentMeIfYouCan track {track!r}: expected one of {sorted(TRACK_SIZE_FILTERS)}")
            components = ComponentAccumulator(result["best_F1_threshold"], track=track)
            for index in tqdm(scored, desc="components", unit="frame"):
                components.add(np.load(cache_dir / f"{index}.npy"), dataset[index].label)
            extra["components"] = components.result()

    write_metrics(args.out, result, extra)
    atomic_write_json(args.out / "frames.json", per_frame)
    write_curve_plots(args.out, accumulator.curve(), result, title=f"{args.dataset} / {args.score}")
    write_gallery(args.out / "gallery", selector.best(), selector.worst(), rank_name="AP")
    skipped.check(args.allow_skips, count, str(args.out / "metrics.json"))
    return {**result, **extra}


def _is_track(value: str) -> TypeGuard[Track]:
    return value in TRACK_SIZE_FILTERS


def summary(metrics: dict) -> str:
    lines = [f"{metrics['dataset']} ({metrics['num_images']} frames, {metrics['num_pixels']} labelled pixels), "
             f"score {metrics['score']}, protocol {metrics['protocol']}",
             f"  AP {100 * metrics['AP']:.2f}   FPR95 {100 * metrics['FPR95']:.2f}   AUROC {100 * metrics['AUROC']:.2f}"
             f"   ({metrics['frames_per_second']} frames/s, {metrics['wall_time_s']} s)"]
    interval = metrics.get("bootstrap_95")
    if interval:
        lines.append("  95% bootstrap over frames: " + "   ".join(
            f"{name} {100 * interval[name]['low']:.2f}-{100 * interval[name]['high']:.2f}" for name in ("AP", "FPR95", "AUROC")))
    components = metrics.get("components")
    if components:
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{100 * value:.2f}"

        lines.append(f"  sIoU {pct(components['sIoU'])}   PPV {pct(components['PPV'])}   "
                     f"mean F1 {pct(components['mean_F1'])}   (threshold {components['threshold']:.4g})")
    return "\n".join(lines)


@user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    metrics = evaluate(args)
    print(summary(metrics))
    print(f"wrote {args.out / 'metrics.json'}, pr_curve.png, roc_curve.png, frames.json, gallery/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
