"""``python -m mgcda_core.sml_stats --images DIR``: per-class max-logit mean and std for the SML score.

SML (Jung et al. ICCV 2021, eq. 2) standardises each pixel's max logit by the mean and standard deviation of
the max logit over all pixels predicted as the same class in a dataset of normal scenes. Name that dataset
(e.g. Cityscapes train ``leftImg8bit/train``; never an evaluation set). Images are resized to the network
input size exactly as the Detector does. The JSON file is written beside the segmentation weights
(``<weights stem>.sml.json``, where ``Detector.default(score="sml")`` finds it) unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.errors import DataError, MissingInputError
from mgcda_core.model.segmentation import DEFAULT_WEIGHTS, NAMES, load_segmentation
from mgcda_core.pipeline.detector import check_input_size, to_network_input
from mgcda_core.pipeline.sml import SMLAccumulator, default_stats_path, save_stats
from mgcda_core.utils.cli import user_errors
from mgcda_core.utils.images import read_rgb
from mgcda_core.utils.outputs import check_output_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def find_images(folder: Path) -> list[Path]:
    """All .png/.jpg/.jpeg files under ``folder`` (recursive, sorted); refuses a missing or image-less folder."""
    if not folder.is_dir():
        raise MissingInputError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"no {'/'.join(IMAGE_SUFFIXES)} images under {folder}")
    return images


def compute(images: list[Path], segmentation: torch.nn.Module, input_size: tuple[int, int]) -> SMLAccumulator:
    """Accumulate the max-logit statistics of ``segmentation`` over ``images``."""
    accumulator = SMLAccumulator()
    with torch.inference_mode():
        for path in tqdm(images, desc="SML statistics", unit="img"):
            accumulator.update(segmentation(torch.from_numpy(to_network_input(read_rgb(path), input_size))))
    return accumulator


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.sml_stats", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, type=Path, help="folder of in-distribution images (recursive)")
    parser.add_argument("--out", type=Path, help="output JSON (default: beside the segmentation weights)")
    parser.add_argument("--segmentation", default="espnetv2", choices=NAMES, help="segmentation plug-in")
    parser.add_argument("--weights", type=Path, help="segmentation weights (default: the embedded ESPNetv2)")
    parser.add_argument("--input-size", type=int, nargs=2, default=DEFAULT_INPUT_SIZE, metavar=("H", "W"),
                        help="network input size, as the Detector uses (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        input_size = check_input_size(tuple(args.input_size))
    except ValueError as error:
        parser.error(f"--input-size: {error}")
    weights = args.weights if args.weights is not None else DEFAULT_WEIGHTS
    out = args.out if args.out is not None else default_stats_path(weights)
    check_output_file(out, "--out", overwrite=True)  # statistics are recomputed in place; a typo is not created
    images = find_images(args.images)
    accumulator = compute(images, load_segmentation(args.segmentation, args.weights), input_size)
    mean, std, fallback = accumulator.result()
    save_stats(out, mean, std, {"segmentation": args.segmentation, "weights": Path(weights).name,
                                "input_size": list(input_size), "num_images": len(images),
                                "images": str(args.images), "pixels_per_class": accumulator.count.astype(int).tolist(),
                                "fallback_classes": fallback})
    print(f"SML statistics of {len(images)} images written to {out}"
          + (f" (classes {fallback} never predicted: pooled statistics used)" if fallback else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
