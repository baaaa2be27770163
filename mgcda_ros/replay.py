"""Rosbag replay evaluation (docs/ROS.md): ``python -m mgcda_ros.replay BAG --image-topic T [--gt-topic G] ...``.

Runs the node's detector (same parameters, same loader) over every frame of an image topic in a rosbag2
(sqlite3/mcap, with or without metadata.yaml) or ROS 1 bag, pairs ground-truth masks by header stamp, writes
``metrics.json`` (through ``mgcda_core.evaluation``, exactly as ``mgcda_core.evaluate``), PR/ROC plots, a gallery
and overlay PNGs, and with ``--write-bag`` a rosbag2 of the mask, score and overlay topics at the original stamps.
No ROS installation needed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mgcda_core.errors import OutputError
from mgcda_core.evaluation.accumulator import PROTOCOLS, MetricAccumulator, Protocol, frame_metrics
from mgcda_core.evaluation.gallery import FrameSelector, GalleryFrame, write_gallery
from mgcda_core.evaluation.metrics_file import write_metrics
from mgcda_core.evaluation.plots import write_curve_plots
from mgcda_core.evaluation.skips import SkippedFrames
from mgcda_core.pipeline.detector import Detector
from mgcda_core.utils.atomic import atomic_write_json
from mgcda_core.utils.cli import user_errors
from mgcda_core.utils.finite import require_finite_score
from mgcda_core.utils.images import write_png
from mgcda_ros.bag_io import COMPRESSED, IMAGE, BagWriter, open_bag, stamp_ns
from mgcda_ros.conversions import (
    RejectedImage,
    bgr_to_fields,
    label_from_image,
    mask_to_fields,
    message_to_rgb,
    score_to_fields,
)
from mgcda_ros.model_loading import load_detector
from mgcda_ros.overlay import anomaly_mask, make_overlay
from mgcda_ros.params import NodeParams

SUMMARY_FILE = "replay.json"
OUTPUT_TOPICS = ("anomaly_mask", "anomaly_score", "anomaly_overlay")


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay and where the results go."""

    bag: Path
    image_topic: str
    out: Path
    params: NodeParams = field(default_factory=NodeParams)
    gt_topic: str | None = None
    write_bag: Path | None = None
    bag_storage: str = "mcap"
    #: namespace of the output topics in the written bag ("" = /anomaly_mask, ...), as the node's would be
    output_namespace: str = ""
    protocol: Protocol = "fishyscapes"
    save_overlays: int = 20
    gallery: int = 3
    progress: bool = True
    #: replace an existing ``write_bag``
    overwrite: bool = False
    #: end without an error when frames were rejected (they are listed in the summary and metrics.json)
    allow_skips: bool = False


class _Evaluation:
    """Metric accumulation and gallery selection over the frames that have ground truth."""

    def __init__(self, protocol: Protocol, gallery: int) -> None:
        self.metrics = MetricAccumulator(protocol)
        self.selector = FrameSelector(gallery)

    def add(self, name: str, rgb: np.ndarray, raw: np.ndarray, label: np.ndarray) -> None:
        self.metrics.add(raw, label, frame=name)
        per_frame = frame_metrics(raw, label)
        if per_frame is not None:
            self.selector.offer(GalleryFrame(name, rgb, label, raw, per_frame["AP"]))


@dataclass
class _ReplayRun:
    """What every frame of one replay shares: the settings, the detector, where outputs go and the running counts."""

    config: ReplayConfig
    detector: Any
    writer: BagWriter | None
    evaluation: _Evaluation | None
    out_topics: dict[str, str]
    overlay_dir: Path
    skipped: SkippedFrames = field(default_factory=SkippedFrames)
    counts: dict[str, float] = field(
        default_factory=lambda: {"frames": 0, "frames_with_gt": 0, "rejected": 0, "model_s": 0.0})

    def frame(self, timestamp: int, msg: Any, label: np.ndarray | None) -> None:
        """Score one frame; write its outputs; add it to the metrics when it has a ground-truth mask."""
        p = self.config.params
        counts = self.counts
        name = f"{stamp_ns(msg)}"
        try:
            rgb = message_to_rgb(msg, p.max_input_pixels, p.input_bit_depth)
        except RejectedImage as err:
            counts["rejected"] += 1
            self.skipped.add(name, f"frame at stamp {name} rejected: {err}")
            tqdm.write(f"replay: frame at stamp {name} rejected: {err}", file=sys.stderr)
            return
        start = time.monotonic()
        raw = self.detector.raw_score(rgb)
        require_finite_score(raw, f"frame at stamp {name}")  # thresholding NaN would say "no anomaly"
        score = self.detector.calibration(raw)  # the node's detector(rgb), without scoring twice
        counts["model_s"] += time.monotonic() - start
        mask = anomaly_mask(score, p.threshold)
        overlay = make_overlay(rgb, mask, p.overlay_alpha)
        if self.writer is not None:
            stamp, frame_id = stamp_ns(msg), str(msg.header.frame_id)
            for topic, fields in (("anomaly_mask", mask_to_fields(mask)), ("anomaly_score", score_to_fields(score)),
                                  ("anomaly_overlay", bgr_to_fields(overlay))):
                self.writer.write_image(self.out_topics[topic], timestamp, stamp, frame_id, fields)
        if counts["frames"] < self.config.save_overlays:
            write_png(self.overlay_dir / f"{int(counts['frames']):05d}_{name}.png",
                      np.ascontiguousarray(overlay[:, :, ::-1]))
        counts["frames"] += 1
        if label is not None and self.evaluation is not None:
            self.evaluation.add(name, rgb, raw, label)
            counts["frames_with_gt"] += 1


def load_replay_detector(params: NodeParams) -> Detector:
    """The node's detector for ``params``, built for a replay: one frame at a time, so no second session."""
    return load_detector(replace(params, frames_in_flight=1))


def replay(config: ReplayConfig, detector: Any = None) -> dict:
    """Replay ``config.bag``; returns the summary also written to ``out/replay.json`` (and metrics when GT exists)."""
    p = config.params
    check_outputs(config)
    with open_bag(config.bag) as bag:
        image_type = bag.require_topic(config.image_topic, (IMAGE, COMPRESSED), "image")
        if config.gt_topic:
            bag.require_topic(config.gt_topic, (IMAGE,), "ground-truth")
        detector = detector if detector is not None else load_replay_detector(p)  # after the cheap checks
        config.out.mkdir(parents=True, exist_ok=True)
        gt_stamps = {stamp_ns(msg) for _, _, msg in bag.messages([config.gt_topic])} if config.gt_topic else set()
        evaluation = _Evaluation(config.protocol, config.gallery) if config.gt_topic else None
        namespace = config.output_namespace.rstrip("/")
        out_topics = {name: f"{namespace}/{name}" if namespace else f"/{name}" for name in OUTPUT_TOPICS}
        if config.write_bag and config.overwrite:
            remove_bag(config.write_bag)
        writer = (BagWriter(config.write_bag, {t: IMAGE for t in out_topics.values()}, config.bag_storage)
                  if config.write_bag else None)
        pending_images: dict[int, tuple[int, Any]] = {}
        pending_labels: dict[int, np.ndarray] = {}
        run = _ReplayRun(config, detector, writer, evaluation, out_topics, config.out / "overlays")
        counts, skipped = run.counts, run.skipped
        start = time.monotonic()
        topics = [config.image_topic] + ([config.gt_topic] if config.gt_topic else [])
        try:
            with tqdm(total=bag.count(config.image_topic), unit="frame", desc="replay", disable=not config.progress,
                      file=sys.stderr) as bar:
                for topic, timestamp, msg in bag.messages(topics):
                    stamp = stamp_ns(msg)
                    if topic == config.gt_topic:
                        try:
                            label = label_from_image(msg)
                        except RejectedImage as err:  # the frame is scored, but cannot count in the metrics
                            skipped.add(f"{stamp}", f"ground truth at stamp {stamp} rejected: {err}")
                            gt_stamps.discard(stamp)
                            if stamp in pending_images:
                                run.frame(*pending_images.pop(stamp), None)
                            continue
                        if stamp in pending_images:
                            run.frame(*pending_images.pop(stamp), label)
                        else:
                            pending_labels[stamp] = label
                        continue
                    bar.update(1)
                    if stamp in gt_stamps and stamp not in pending_labels:
                        pending_images[stamp] = (timestamp, msg)  # its mask comes later in the bag
                        continue
                    run.frame(timestamp, msg, pending_labels.pop(stamp, None))
                    bar.set_postfix(fps=f"{counts['frames'] / max(time.monotonic() - start, 1e-9):.2f}")
            for timestamp, msg in pending_images.values():  # only if a mask's stamp repeats: score them anyway
                run.frame(timestamp, msg, None)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.close()
    elapsed = time.monotonic() - start
    model_info = dict(getattr(detector, "info", {}))
    summary = {
        "bag": str(config.bag), "image_topic": config.image_topic, "image_type": image_type,
        "gt_topic": config.gt_topic, "frames": counts["frames"], "frames_with_gt": counts["frames_with_gt"],
        "rejected_frames": counts["rejected"], "gt_without_image": len(pending_labels), **skipped.as_metrics(),
        "fps": counts["frames"] / elapsed if elapsed > 0 else None,
        "model_fps": counts["frames"] / counts["model_s"] if counts["model_s"] > 0 else None,
        "parameters": p.as_dict(), "model": model_info, "output_bag": str(config.write_bag) if config.write_bag else None,
    }
    if evaluation is not None and counts["frames_with_gt"]:
        result = evaluation.metrics.result()
        write_metrics(config.out, result, extra={"score": p.score, "model": model_info, "checkpoint": p.model_path or None,
                                                 "source": f"rosbag replay of {config.bag} ({config.image_topic})",
                                                 **skipped.as_metrics()})
        write_curve_plots(config.out, evaluation.metrics.curve(), result, title=f"replay {config.bag.name}")
        write_gallery(config.out / "gallery", evaluation.selector.best(), evaluation.selector.worst())
        summary["metrics"] = {k: result[k] for k in ("AP", "FPR95", "AUROC", "num_images", "num_pixels", "protocol")}
    atomic_write_json(config.out / SUMMARY_FILE, summary)
    skipped.check(config.allow_skips, int(counts["frames"] + counts["rejected"]), str(config.out / SUMMARY_FILE))
    return summary


def check_outputs(config: ReplayConfig) -> None:
    """Refuse, before any work: an ``out`` that is a file, an existing ``write_bag`` without ``overwrite``."""
    if config.out.exists() and not config.out.is_dir():
        raise OutputError(f"--out {config.out} is a file; name a folder")
    if config.write_bag is not None and config.write_bag.exists() and not config.overwrite:
        raise OutputError(f"--write-bag {config.write_bag} exists; pass --overwrite to replace it")


def remove_bag(path: Path) -> None:
    """Delete a bag written earlier (a rosbag2 folder or a single storage file) that is being replaced."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def build_parser() -> argparse.ArgumentParser:
    defaults = NodeParams()
    parser = argparse.ArgumentParser(prog="python -m mgcda_ros.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="ROS 1 .bag, rosbag2 directory, or rosbag2 .db3/.mcap file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--gt-topic", help="ground-truth masks (mono8: 0 normal, 1 anomaly, 255 ignore), paired by header stamp")
    parser.add_argument("--out", type=Path, default=Path("replay_out"), help="output folder (default: replay_out)")
    parser.add_argument("--write-bag", type=Path, help="write a rosbag2 with mask, score and overlay topics here")
    parser.add_argument("--bag-storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--output-namespace", default="", help="namespace of the written topics (default: none)")
    parser.add_argument("--score", default=defaults.score, help=f"anomaly score (default: {defaults.score})")
    parser.add_argument("--model", default="", help="trained checkpoint/ONNX/engine (default: embedded default model)")
    parser.add_argument("--backend", default=defaults.backend)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--input-width", type=int, default=defaults.input_width)
    parser.add_argument("--input-height", type=int, default=defaults.input_height)
    parser.add_argument("--threshold", type=float, default=defaults.threshold)
    parser.add_argument("--overlay-alpha", type=float, default=defaults.overlay_alpha)
    parser.add_argument("--protocol", choices=PROTOCOLS, default="fishyscapes")
    parser.add_argument("--save-overlays", type=int, default=20, help="overlay PNGs of the first N frames (default 20)")
    parser.add_argument("--gallery", type=int, default=3, help="best/worst frames in the gallery (default 3)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --write-bag")
    parser.add_argument("--allow-skips", action="store_true",
                        help="exit 0 although frames were rejected (they are listed in metrics.json and replay.json)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    params = NodeParams(backend=args.backend, model_path=args.model, device=args.device, input_width=args.input_width,
                        input_height=args.input_height, score=args.score, threshold=args.threshold,
                        overlay_alpha=args.overlay_alpha)
    return ReplayConfig(bag=args.bag, image_topic=args.image_topic, out=args.out, params=params, gt_topic=args.gt_topic,
                        write_bag=args.write_bag, bag_storage=args.bag_storage, output_namespace=args.output_namespace,
                        protocol=args.protocol, save_overlays=args.save_overlays, gallery=args.gallery,
                        progress=not args.no_progress, overwrite=args.overwrite, allow_skips=args.allow_skips)


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary = replay(config_from_args(args))
    print(f"replay: {summary['frames']} frames at {summary['fps']:.2f} fps -> {args.out.resolve()}")
    if "metrics" in summary:
        m = summary["metrics"]
        print(f"replay: AP {m['AP']:.4f}  FPR95 {m['FPR95']:.4f}  AUROC {m['AUROC']:.4f} over {m['num_images']} frames"
              f" -> {(args.out / 'metrics.json').resolve()}")
    if args.write_bag:
        print(f"replay: output bag {args.write_bag.resolve()} (topics {', '.join(OUTPUT_TOPICS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
