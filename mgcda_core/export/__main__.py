"""``python -m mgcda_core.export``: the inference path to ONNX (checked), optionally a TensorRT engine.

Examples:
  python -m mgcda_core.export --onnx model.onnx                      # training-free default (ESPNetv2 max logit)
  python -m mgcda_core.export --checkpoint ckpt.pt --onnx model.onnx  # full path with the dissimilarity network
  python -m mgcda_core.export --onnx model.onnx --engine model.engine --precision fp16       # + engine (GPU)
  python -m mgcda_core.export --onnx model.onnx --engine model.engine --build-only          # on the Jetson
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.errors import DataError
from mgcda_core.export.engine_cache import write_engine
from mgcda_core.export.onnx_export import OPSET, ExportConfig, export_onnx
from mgcda_core.export.parameters import parameter_report
from mgcda_core.model.shipped import SHIPPED_SCORE
from mgcda_core.runtime.factory import DEFAULT_ENGINE_CACHE
from mgcda_core.utils.cli import user_errors
from mgcda_core.utils.outputs import check_output_file

STAGES = ("score", "logits", "uncertainty", "synthesis")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="mgcda checkpoint with the trained dissimilarity network "
                        "(default: none, export the training-free pipeline)")
    parser.add_argument("--onnx", type=Path, required=True, help="ONNX file to write (with --build-only: to read)")
    parser.add_argument("--engine", type=Path, help="also build a TensorRT engine here (needs a GPU and TensorRT)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="engine precision")
    parser.add_argument("--build-only", action="store_true",
                        help="do not export: build the engine from an existing --onnx (on the target device)")
    parser.add_argument("--stages", choices=STAGES, default="score",
                        help="prefix of the inference path to export (default: the full path to the score)")
    parser.add_argument("--score", help=f"score to export (default: dissimilarity with --checkpoint, else {SHIPPED_SCORE} "
                                        "of the network shipped in the package, like Detector.default)")
    parser.add_argument("--height", type=int, default=DEFAULT_INPUT_SIZE[0], help="network input height")
    parser.add_argument("--width", type=int, default=DEFAULT_INPUT_SIZE[1], help="network input width")
    parser.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    parser.add_argument("--max-height", type=int, help="engine profile maximum height (dynamic ONNX only)")
    parser.add_argument("--max-width", type=int, help="engine profile maximum width (dynamic ONNX only)")
    parser.add_argument("--engine-cache", type=lambda p: Path(p).expanduser(), default=DEFAULT_ENGINE_CACHE,
                        help="engine cache directory")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace limit (MiB)")
    parser.add_argument("--device", default="cuda:0", help="CUDA device to build the engine for")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --onnx / --engine files")
    args = parser.parse_args(argv)
    if args.build_only and args.engine is None:
        parser.error("--build-only builds an engine: give --engine")
    if args.build_only and not args.onnx.is_file():
        parser.error(f"--build-only reads an existing ONNX, but {args.onnx} does not exist")
    if args.build_only and args.checkpoint is not None:
        parser.error("--build-only does not export, so --checkpoint has no effect; drop one of them")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")
    if not args.build_only:
        check_output_file(args.onnx, "--onnx", args.overwrite)
    if args.engine is not None:
        check_output_file(args.engine, "--engine", args.overwrite)
    return args


def read_onnx(path: Path) -> onnx.ModelProto:
    """The model in ``path`` (external data not loaded); a file that is not an ONNX graph is a DataError."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as error:
        raise DataError(f"--onnx {path} is not an ONNX model ({error})") from None
    if not proto.graph.input or not proto.graph.output:
        raise DataError(f"--onnx {path} is not an ONNX model (it holds no graph inputs or outputs)")
    return proto


def export(args: argparse.Namespace) -> None:
    from mgcda_core.pipeline.detector import build_graph

    score = args.score or ("dissimilarity" if args.checkpoint else SHIPPED_SCORE)
    config = ExportConfig(height=args.height, width=args.width, dynamic=args.dynamic, output_name=args.stages)
    graph = build_graph(score, args.checkpoint, output=args.stages)

    def describe(model: onnx.ModelProto) -> dict:
        return {"stages": args.stages, "score": score if args.stages == "score" else None,
                "checkpoint": str(args.checkpoint) if args.checkpoint else None,
                "architecture": graph.dissimilarity.architecture if graph.dissimilarity is not None else None,
                **parameter_report(model, graph)}

    print(f"exporting {args.stages} ({score if args.stages == 'score' else 'prefix'}) at {args.height}x{args.width}"
          f"{' dynamic' if args.dynamic else ''}, opset {OPSET} ...", flush=True)
    report = export_onnx(graph, args.onnx, config, describe, progress=True)
    facts = report.description
    print(f"wrote {args.onnx} (+ {args.onnx.name}.json), sha256 {report.onnx_sha256[:16]}...")
    print(f"ONNX Runtime vs PyTorch max abs difference at {args.height}x{args.width}: "
          f"{report.max_abs_diff_onnxruntime_vs_torch:.3g} (max |output| {report.output_max_abs:.3g}; allowed "
          f"{report.max_abs_diff_allowed:.3g} from PyTorch's own float32 error {report.float32_error:.3g})")
    if "dynamic_check" in facts:
        check = facts["dynamic_check"]
        print(f"dynamic: ONNX Runtime vs PyTorch max abs difference at {'x'.join(map(str, check['size']))}: "
              f"{check['max_abs_diff']:.3g}")
    print(f"operators: {sum(report.operators.values())} nodes of {len(report.operators)} types, all in the TensorRT "
          f"{report.tensorrt_supported_ops} ONNX parser's supported list")
    print(f"exported parameters: {facts['exported_parameters']:,} "
          + ", ".join(f"{k} {v:,}" for k, v in facts["exported_parameters_by_component"].items()))
    if "baseline_dissimnet_parameters" in facts:
        print(f"dissimilarity parameters equal the baseline DissimNetPrior's: "
              f"{facts['baseline_dissimnet_parameters']:,} (MGCDA's training-only modules absent)")


def build_engine(args: argparse.Namespace) -> None:
    from mgcda_core.export.tensorrt_builder import BuildConfig, build_engine_cached, profile_for

    proto = read_onnx(args.onnx)
    minimum, optimum, maximum = profile_for(proto, args.height, args.width, args.max_height, args.max_width)
    config = BuildConfig(precision=args.precision, min_shape=minimum, opt_shape=optimum, max_shape=maximum,
                         workspace_bytes=args.workspace_mb << 20, timing_cache_dir=args.engine_cache)
    print(f"building the {args.precision} TensorRT engine (minutes on a Jetson; reused from {args.engine_cache} "
          "when already built) ...", flush=True)
    cached, key = build_engine_cached(args.onnx, args.engine_cache, config, args.device)
    write_engine(args.engine, key, cached.data)
    state = "built" if cached.built else "reused from cache"
    print(f"engine {state}: {args.engine} (+ .json sidecar), {len(cached.data):,} bytes, {args.precision} "
          f"({key.recipe}), TensorRT {key.tensorrt_version} on {key.gpu_name} (sm {key.compute_capability}), "
          f"profile {minimum} .. {maximum}")


@user_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.build_only:
            export(args)
        if args.engine is not None:
            build_engine(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
