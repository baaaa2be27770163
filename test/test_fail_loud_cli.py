"""Every user mistake gets one line ``error: ...`` naming the file, key or value, and exit status 2; nothing is
silently overwritten. Each bad input is built here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_training_data import write_layout

from mgcda_core import evaluate, sml_stats, train
from mgcda_core.data import procedural
from mgcda_core.data.layout import LayoutDataset
from mgcda_core.errors import DataError, ModelError, OutputError
from mgcda_core.evaluation.accumulator import MetricAccumulator
from mgcda_core.export import __main__ as export
from mgcda_core.study import __main__ as study
from mgcda_core.utils.atomic import atomic_write_bytes
from mgcda_core.utils.cli import one_line, user_errors
from mgcda_core.utils.finite import count_non_finite, require_finite_score

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "train.yaml"

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def only_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error: ...`` line on stderr (tqdm bars aside); fails if there is a traceback or two errors."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("optim:\n  lr: .nan\n", "error: 'optim.lr': expected a finite number, got nan"),
    ("optim:\n  lr: .inf\n", "error: 'optim.lr': expected a finite number, got inf"),
    ("model:\n  width: 1e400\n", "error: 'model.width': expected a finite number, got inf"),
    ("model:\n  width: 200\n", "error: model: width must lie in (0, 4], got 200.0"),
    ("train:\n  seed: -1\n", "error: train: seed must be >= 0, got -1"),
    ("optim:\n  lr: '" + "x" * 10_000 + "'\n", "error: 'optim.lr': expected float, got 'xxxxx"),
])
def test_bad_config_values_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                         expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: {CONFIG}\n{text}")
    assert train.main(["--config", str(path)]) == 2
    line = only_error_line(capsys)
    assert line.startswith(expected)
    assert len(line) < 300  # a 10,000-character value is not echoed


def test_binary_and_alias_bomb_configs_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    assert train.main(["--config", str(binary)]) == 2
    assert only_error_line(capsys) == f"error: {binary}: not a YAML text file (not UTF-8; a binary file?)"
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("optim:\n  lr: *i\n" .join(["\n".join(levels) + "\n", ""]))
    assert train.main(["--config", str(bomb)]) == 2
    assert only_error_line(capsys) == (f"error: {bomb}: YAML aliases expand the document to more than 100000 nodes "
                                       "(an alias bomb?); write the values out")


def test_input_size_must_fit_the_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    roots = [write_layout(tmp_path / d, 2, size=(36, 68)) for d in ("v", "a")]
    assert train.main(["--config", str(CONFIG), "--no-progress", "--set", f"data.domain_v={roots[0]}",
                       "--set", f"data.domain_a={roots[1]}", "--set", "data.input_size=[36, 68]",
                       "--set", "model.pretrained=false", "--set", "model.width=0.125", "--set", "train.batch_size=2",
                       "--set", f"checkpoint.out_dir={tmp_path / 'run'}"]) == 2
    assert only_error_line(capsys) == ("error: data.input_size: [36, 68] must be multiples of 8 for encoder vgg16 "
                                       "(its coarsest stride)")


def test_training_into_a_folder_with_checkpoints_needs_resume_or_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for domain in ("v", "a"):
        (tmp_path / domain).mkdir()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.pt").write_bytes(b"an earlier run")
    args = ["--config", str(CONFIG), "--set", f"data.domain_v={tmp_path / 'v'}",
            "--set", f"data.domain_a={tmp_path / 'a'}", "--set", f"checkpoint.out_dir={tmp_path / 'run'}"]
    assert train.main(args) == 2
    assert only_error_line(capsys) == (f"error: {tmp_path / 'run' / 'checkpoints'} holds checkpoints of a run "
                                       "(latest.pt): pass --resume to continue it or --overwrite to start over and "
                                       "delete them")
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").read_bytes() == b"an earlier run"
    with pytest.raises(SystemExit) as exit_:
        train.main([*args, "--resume", "--overwrite"])
    assert exit_.value.code == 2


def _layout_error(root: Path) -> str:
    with pytest.raises(DataError) as caught:
        LayoutDataset(root, (32, 64))[0]
    return str(caught.value)


def test_bad_training_files_are_named(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "v", 1)
    name = "img_000.png"
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(root / "labels" / name)
    assert _layout_error(root) == (f"{root / 'labels' / name}: label has value 7, expected label values "
                                   "in {0, 1, 255}")
    Image.fromarray(np.zeros((16, 32), np.uint8)).save(root / "labels" / name)
    assert _layout_error(root) == f"{root / 'labels' / name}: size 32x16 differs from its image original/{name} (64x32)"
    png = (root / "semantic" / name).read_bytes()
    (root / "semantic" / name).write_bytes(png[:60])
    assert _layout_error(root).startswith(f"{root / 'semantic' / name}: not a readable label image (")


def test_an_error_in_a_loader_worker_keeps_its_one_line_message(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "v", 1)
    (root / "original" / "img_000.png").write_bytes(b"not a png")
    loader = torch.utils.data.DataLoader(LayoutDataset(root, (32, 64)), batch_size=None, num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # how torch re-raises it
    assert one_line(caught.value).startswith(f"{root / 'original' / 'img_000.png'}: not a readable image "
                                             "(UnidentifiedImageError: \"cannot identify image file ")


def test_disk_full_while_checkpointing_keeps_the_old_file(tmp_path: Path) -> None:
    # A file-size limit makes the kernel fail the write with EFBIG, as a full disk fails it with ENOSPC.
    target = tmp_path / "latest.pt"
    target.write_bytes(b"old checkpoint")
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
              "from mgcda_core.utils.atomic import atomic_write_bytes\n"
              "from mgcda_core.utils.cli import user_errors\n"
              f"sys.exit(user_errors(lambda: atomic_write_bytes({str(target)!r}, bytes(100_000)) or 0)())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr == f"error: cannot write {target}: File too large\n"
    assert target.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_atomic_write_onto_a_folder_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'model.onnx'}: Is a directory$"):
        atomic_write_bytes(tmp_path / "model.onnx", b"x")


def test_atomic_write_mode_follows_umask_and_stale_temporaries_go(tmp_path: Path) -> None:
    stale = tmp_path / ".latest.pt.k1lled00.tmp"
    fresh = tmp_path / ".latest.pt.writing0.tmp"
    other = tmp_path / ".other.pt.k1lled00.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    os.utime(other, (0, 0))
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "latest.pt", b"new")
    finally:
        os.umask(previous)
    assert (tmp_path / "latest.pt").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [".latest.pt.writing0.tmp", ".other.pt.k1lled00.tmp",
                                                          "latest.pt"]


def test_non_finite_scores_are_refused_naming_the_frame() -> None:
    score = np.zeros((4, 4), np.float32)
    score[0, :2] = np.nan
    with pytest.raises(ModelError, match=r"^frame cam_007: the model produced a score map with 2 NaN or infinite "
                                         r"values of 16; refusing to score it"):
        MetricAccumulator("fishyscapes").add(score, np.zeros((4, 4), np.uint8), frame="cam_007")


def test_infinite_scores_count_as_non_finite_and_integer_maps_never_do() -> None:
    score = np.zeros((2, 3), np.float32)
    score[0] = [np.inf, -np.inf, np.nan]
    assert count_non_finite(score) == 3 and count_non_finite(np.zeros((2, 2), np.uint8)) == 0
    with pytest.raises(ModelError, match=r"^frame at stamp 5\.000000000: the model produced a score map with 3 NaN or "
                                         r"infinite values of 6; refusing to score it"):
        require_finite_score(score, "frame at stamp 5.000000000")
    require_finite_score(np.ones((2, 2), np.float32), "a finite frame")  # no error


def _road_anomaly(root: Path, count: int) -> Path:
    (root / "frames").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(count):
        name = f"f{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(root / "frames" / name)
        label = np.zeros((64, 128), np.uint8)
        label[20:40, 30:60] = 2
        (root / "frames" / f"f{i}.labels").mkdir()
        Image.fromarray(label).save(root / "frames" / f"f{i}.labels" / "labels_semantic.png")
        names.append(name)
    (root / "frame_list.json").write_text(json.dumps(names))
    return root


def test_evaluate_names_unreadable_frames_and_fails_unless_skips_are_allowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _road_anomaly(tmp_path / "ra", 3)
    jpeg = (root / "frames" / "f1.jpg").read_bytes()
    (root / "frames" / "f1.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated
    (root / "frames" / "f2.labels" / "labels_semantic.png").write_text("not an image")
    args = ["--dataset", "road_anomaly", "--root", str(root), "--score", "max_logit", "--input-size", "64", "128",
            "--gallery", "0"]
    assert evaluate.main([*args, "--out", str(tmp_path / "out")]) == 2
    line = only_error_line(capsys)
    assert line.startswith(f"error: 2 of 3 frames were skipped ({root / 'frames' / 'f1.jpg'}: not a readable image "
                           "(OSError: ")
    assert f"; {root / 'frames' / 'f2.labels' / 'labels_semantic.png'}: not a readable label image (" in line
    assert line.endswith(f"); {tmp_path / 'out' / 'metrics.json'} covers the others only: fix the input or pass "
                         "--allow-skips to accept that")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["skipped_frames"], metrics["skipped"], metrics["num_images"]) == (2, ["f1", "f2"], 1)
    assert evaluate.main([*args, "--out", str(tmp_path / "allowed"), "--allow-skips"]) == 0
    assert json.loads((tmp_path / "allowed" / "metrics.json").read_text())["skipped_frames"] == 2


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_evaluate_on_an_absent_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _road_anomaly(tmp_path / "ra", 1)
    assert evaluate.main(["--dataset", "road_anomaly", "--root", str(root), "--out", str(tmp_path / "o"),
                          "--device", "cuda:7"]) == 2
    line = only_error_line(capsys)
    assert line.startswith("error: --device cuda:7: ")
    assert line.endswith(("no CUDA device is available here; use --device cpu", "there is no such device, only "
                          f"cuda:0..cuda:{torch.cuda.device_count() - 1}"))


def test_export_refuses_bad_targets_and_a_garbage_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("garbage")
    assert export.main(["--onnx", str(garbage), "--engine", str(tmp_path / "m.engine"), "--build-only"]) == 2
    assert only_error_line(capsys).startswith(f"error: --onnx {garbage} is not an ONNX model (Error parsing message")
    assert export.main(["--onnx", str(garbage)]) == 2
    assert only_error_line(capsys) == f"error: --onnx {garbage} exists; pass --overwrite to replace it"
    assert export.main(["--onnx", str(tmp_path)]) == 2
    assert only_error_line(capsys) == f"error: --onnx {tmp_path} is a folder; name a file"
    missing = tmp_path / "nonexistent" / "dir" / "m.onnx"
    assert export.main(["--onnx", str(missing)]) == 2
    assert only_error_line(capsys) == (f"error: --onnx {missing}: folder {missing.parent} does not exist "
                                       "(create it first)")
    assert not missing.parent.exists()


def test_sml_stats_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sml_stats.main(["--images", str(tmp_path / "absent"), "--out", str(tmp_path / "s.json")]) == 2
    assert only_error_line(capsys) == f"error: image folder not found: {tmp_path / 'absent'}"
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert sml_stats.main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "no" / "s.json")]) == 2
    assert only_error_line(capsys) == f"error: --out {tmp_path / 'no' / 's.json'}: folder {tmp_path / 'no'} does " \
                                      "not exist (create it first)"
    assert sml_stats.main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "s.json"),
                           "--input-size", "64", "128"]) == 2
    assert only_error_line(capsys).startswith(f"error: {tmp_path / 'imgs' / 'a.png'}: not a readable image (")


def test_procedural_and_study_bad_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert procedural.main(["--out", str(tmp_path / "file")]) == 2
    assert only_error_line(capsys) == f"error: --out {tmp_path / 'file'} is a file; name a folder"
    with pytest.raises(SystemExit) as exit_:
        procedural.main(["--out", str(tmp_path / "p"), "--seed", "-1"])
    assert exit_.value.code == 2 and "seed must be >= 0 (numpy seeds), got -1" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    evaluation_set = _road_anomaly(tmp_path / "ra", 1)
    assert study.main(["--out", str(tmp_path / "mine"), "--data-only", "--set",
                       f"evaluation.road_anomaly={evaluation_set}"]) == 2
    assert only_error_line(capsys).startswith(f"error: {tmp_path / 'mine'} is not empty and holds no study "
                                              "(study.json); choose another --out")


def test_only_project_errors_become_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def main(error: Exception) -> int:
        raise error

    assert user_errors(main)(OutputError("cannot write x:\n  disk full")) == 2
    assert capsys.readouterr().err == "error: cannot write x: disk full\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        user_errors(main)(KeyError("k"))
    with pytest.raises(ValueError):
        user_errors(main)(ValueError("a plain ValueError is a bug too"))
