"""The study's data, built once per study folder: procedural scenes (two source styles and a held-out target
style), ``prepare`` for the two training domains (VoidClass, AnomalyMix), and the target style split into a
validation set (for choosing the recipe) and a test set. RoadAnomaly is only ever evaluated on, never split.

Evaluation sets are not ``prepare``d: evaluation runs the whole inference pipeline on their raw frames.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mgcda_core import prepare
from mgcda_core.data import procedural
from mgcda_core.errors import MgcdaError
from mgcda_core.losses.cacl import DOMAIN_NAMES
from mgcda_core.study.config import StudyData
from mgcda_core.training.diagnostics import anomaly_pixel_census, census_warning
from mgcda_core.utils.atomic import atomic_write_json

DATA_MARKER = "data.json"
TARGET_SPLITS = ("target_val", "target_test")
DOMAIN_FOLDERS = dict(zip(DOMAIN_NAMES, prepare.DOMAINS))  # V -> voidclass, A -> anomalymix (domain ids 0, 1)


class StudyError(MgcdaError, RuntimeError):
    """A study step failed or the study folder holds results of other settings; the message says which."""


@dataclass(frozen=True)
class StudyDataPaths:
    domain_v: Path
    domain_a: Path
    target_val: Path   # Fishyscapes layout (original/, labels/)
    target_test: Path
    commands: tuple[str, ...]  # the commands that built them, for the record


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _run(name: str, main: Callable[[list[str]], int], argv: list[str], commands: list[str]) -> None:
    """Run a package CLI in this process (no second interpreter and torch import) and record its command line."""
    commands.append(shlex.join(["python", "-m", name, *argv]))
    if main(argv) != 0:
        raise StudyError(f"{commands[-1]} failed (see its error above)")


def split_target(target_root: Path, out: Path, val_every: int) -> tuple[Path, Path]:
    """Link target frames into ``out/target_val`` (frame i of name order with i % val_every == 0) and
    ``out/target_test`` (the rest), each in the Fishyscapes layout the evaluation reads."""
    labels = sorted((target_root / "labels").glob("*.png"))
    if len(labels) < val_every:
        raise StudyError(f"{target_root}/labels holds {len(labels)} frames; the validation/test split needs at least "
                         f"{val_every}")
    roots = [out / split for split in TARGET_SPLITS]
    for index, label in enumerate(labels):
        image = target_root / "original" / label.name
        if not image.is_file():
            raise StudyError(f"{label} has no image {image}")
        root = roots[0 if index % val_every == 0 else 1]
        for source, folder in ((image, "original"), (label, "labels")):
            link = root / folder / label.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():  # relative, so the study folder can be moved as a whole
                link.symlink_to(os.path.relpath(source.resolve(), link.parent.resolve()))
    return roots[0], roots[1]


def build_study_data(config: StudyData, out: Path) -> tuple[StudyDataPaths, dict]:
    """Generate, prepare and split the study's data under ``out`` (skipped when ``out/data.json`` exists with the
    same settings; refused when it holds other settings). Returns the paths and the data record."""
    marker = out / DATA_MARKER
    settings = json.loads(json.dumps(asdict(config)))  # tuples → lists, as read back from JSON
    if marker.is_file():
        record = json.loads(marker.read_text())
        if record["settings"] != settings:
            raise StudyError(f"{marker} was built with {record['settings']}, this study asks for {settings}; "
                             "use another --out")
    else:
        record = _build(config, out, settings)
        atomic_write_json(marker, record)
    paths = StudyDataPaths(out / "prepared" / DOMAIN_FOLDERS["V"], out / "prepared" / DOMAIN_FOLDERS["A"],
                           out / TARGET_SPLITS[0], out / TARGET_SPLITS[1], tuple(record["commands"]))
    return paths, record


def _build(config: StudyData, out: Path, settings: dict) -> dict:
    commands: list[str] = []
    generated, prepared = out / "procedural", out / "prepared"
    _run("mgcda_core.data.procedural", procedural.main,
         ["--out", str(generated), "--seed", str(config.seed), "--frames", str(config.source_frames),
          "--size", _size(config.generate_size), "--target-frames", str(config.target_frames), "--workers", "1"],
         commands)
    manifest = json.loads((generated / "procedural.json").read_text())
    _run("mgcda_core.prepare", prepare.main,
         ["--cityscapes", str(generated / "cityscapes"), "--coco", str(generated / "coco"), "--out", str(prepared),
          "--size", _size(config.input_size), "--seed", str(config.seed),
          "--coco-min-size", str(manifest["coco_min_size"])], commands)
    split_target(generated / "fishyscapes", out, config.val_every)
    return {"settings": settings, "commands": commands, "source_styles": manifest["source_styles"],
            "target_style": manifest["target_style"], "cwd": os.getcwd()}


def data_census(paths: StudyDataPaths, n_anchor: int) -> tuple[dict, list[str]]:
    """Anomaly pixels per frame of every study set against CACL's N_a, and a warning per training domain
    whose frames cannot fill the anchor set."""
    roots = {"V": paths.domain_v, "A": paths.domain_a, "target_val": paths.target_val,
             "target_test": paths.target_test}
    census = {name: anomaly_pixel_census(root / "labels", n_anchor) for name, root in roots.items()}
    warnings = [w for name in DOMAIN_FOLDERS if (w := census_warning(name, census[name], n_anchor)) is not None]
    return census, warnings
