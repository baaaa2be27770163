"""``python -m mgcda_ros.demo --out DIR``: the main job end to end on what ships in the package.

Builds a rosbag2 (mcap) from the real RoadAnomaly road frames in ``mgcda_ros/assets/road_anomaly`` (JPEG
``CompressedImage`` camera topic plus mono8 ground-truth masks), replays it through the node's default detector
(the MGCDA network shipped in the package on the embedded Cityscapes-trained ESPNetv2; nothing downloads, no
../shared needed) and writes
``metrics.json``, PR/ROC plots, a gallery, overlay PNGs and an output bag with the node's three topics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgcda_core.data.eval_sets import road_anomaly
from mgcda_core.errors import OutputError
from mgcda_core.utils.cli import user_errors
from mgcda_ros.bag_io import COMPRESSED, IMAGE, BagWriter
from mgcda_ros.conversions import label_to_fields
from mgcda_ros.params import NodeParams
from mgcda_ros.replay import ReplayConfig, load_replay_detector, replay

ASSETS = Path(__file__).resolve().parent / "assets" / "road_anomaly"
IMAGE_TOPIC = "/camera/image_raw/compressed"
GT_TOPIC = "/camera/anomaly_gt"
FRAME_PERIOD_NS = 100_000_000  # 10 Hz
FIRST_STAMP_NS = 1_700_000_000_000_000_000


def build_demo_bag(path: Path, assets: Path = ASSETS) -> int:
    """Write the asset frames (original JPEG bytes) and their masks (0 normal, 1 anomaly) at 10 Hz; returns the count."""
    frames = road_anomaly(assets)
    with BagWriter(path, {IMAGE_TOPIC: COMPRESSED, GT_TOPIC: IMAGE}) as writer:
        for index, frame in enumerate(frames.frames):
            stamp = FIRST_STAMP_NS + index * FRAME_PERIOD_NS
            label = frames[index].label
            writer.write_compressed(IMAGE_TOPIC, stamp, stamp, "camera", "jpeg", frame.image_path.read_bytes())
            writer.write_image(GT_TOPIC, stamp, stamp, "camera", label_to_fields(label))
    return len(frames)


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--score", default=NodeParams().score, help=f"anomaly score (default {NodeParams().score}, the shipped network's)")
    args = parser.parse_args(argv)
    input_bag, output_bag = args.out / "input_bag", args.out / "anomaly_bag"
    for existing in (input_bag, output_bag):
        if existing.exists():
            raise OutputError(f"{existing} exists; choose a new --out folder")
    params = NodeParams(score=args.score)
    detector = load_replay_detector(params)  # a score it cannot run fails here, before anything is written
    count = build_demo_bag(input_bag)
    print(f"demo: wrote {count} RoadAnomaly frames to {input_bag} ({IMAGE_TOPIC}, {GT_TOPIC})")
    config = ReplayConfig(bag=input_bag, image_topic=IMAGE_TOPIC, gt_topic=GT_TOPIC, out=args.out,
                          params=params, write_bag=output_bag)
    summary = replay(config, detector)
    metrics = summary["metrics"]
    out = args.out.resolve()
    model = summary["model"]
    print(f"demo: {summary['frames']} frames at {summary['fps']:.2f} fps, score {args.score}, backend "
          f"{model.get('backend')} ({model.get('device')}); weights: segmentation {model.get('segmentation')}, "
          f"perceptual {model.get('perceptual')}, dissimilarity {model.get('dissimilarity') or 'none (training-free)'}")
    print(f"demo: AP {metrics['AP']:.4f}  FPR95 {metrics['FPR95']:.4f}  AUROC {metrics['AUROC']:.4f} "
          f"({metrics['num_pixels']} labelled pixels)")
    print(f"demo: metrics  {out / 'metrics.json'}")
    print(f"demo: overlays {out / 'overlays'}  gallery {out / 'gallery'}  curves {out / 'pr_curve.png'}")
    print(f"demo: bags     {input_bag.resolve()} (input), {output_bag.resolve()} (anomaly_mask/score/overlay; "
          "open in Foxglove or `ros2 bag play`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
