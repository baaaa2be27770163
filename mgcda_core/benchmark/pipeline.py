"""Benchmark section "pipeline": per-stage latency, FLOPs and achieved FLOP/s of the torch inference path.

Stages: pre-processing (1280x720 uint8 camera frame → network tensor), segmentation (embedded ESPNetv2),
resynthesis (class-mean), uncertainty (entropy, softmax distance, EfficientNet-Lite0 perceptual difference),
dissimilarity (DissimNetPrior with the vgg16 and efficientnet_lite0 encoders, untrained weights: same cost),
post-processing (score resized back to 1280x720 + calibration); then the shipped real-time network's decoder on
the backbone features it shares with the perceptual difference, and the whole shipped default pipeline (camera
frame in, calibrated score map out) on ONNX Runtime, in frames per second; when the shipped network runs its own
encoder pass, also the same architecture with the backbone shared. Achieved FLOP/s is compared with a float32
matrix-multiply peak measured in the same run, same threads.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from mgcda_core.benchmark.host import cache_sharing, core_coupling
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.pipeline.calibration import DEFAULT_CALIBRATION
from mgcda_core.pipeline.detector import Detector, build_graph, to_network_input
from mgcda_core.pipeline.graph import InferenceGraph
from mgcda_core.pipeline.resynthesis import one_hot
from mgcda_core.pipeline.stages import InferenceStages, imagenet_normalise
from mgcda_core.utils.flops import call_flops, count_flops

CAMERA = (720, 1280)


SUSTAINED_FRAMES = (4, 40)  # the shipped pipeline end to end, full run: (blocks, frames per block)
BUDGET_S = 20.0  # per measurement: heavy stages (VGG16 at 512x1024 on CPU) stop repeating after this


def times_ms(fn: Callable[[], object], repeats: int, budget_s: float = BUDGET_S) -> list[float]:
    """Wall times of ``fn`` in ms after one warm-up call: ``repeats`` calls, fewer (at least one) when they exceed
    ``budget_s``."""
    fn()
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s * 1000.0):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def median_ms(fn: Callable[[], object], repeats: int, budget_s: float = BUDGET_S) -> float:
    """Median of ``times_ms``."""
    return statistics.median(times_ms(fn, repeats, budget_s))


def matmul_peak(repeats: int, n: int = 1024) -> float:
    """Measured float32 matmul throughput (FLOP/s) of an n x n product on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = median_ms(lambda: torch.mm(a, b), repeats)
    return 2.0 * n ** 3 / (ms / 1000.0)


def shipped_rows(rows: list[dict], stages: InferenceStages, frame: np.ndarray, size: tuple[int, int], repeats: int,
                 peak: float, sustained: tuple[int, int]) -> None:
    """The shipped real-time network: its decoder on the shared backbone features (torch), and the whole default
    pipeline — pre-processing, exported graph on ONNX Runtime, post-processing — per camera frame, ``sustained`` =
    (blocks, frames per block)."""
    from mgcda_core.model.checkpoint import load_model
    from mgcda_core.model.shipped import SHIPPED_SCORE, shipped_checkpoint

    net = load_model(shipped_checkpoint()).eval()
    image = torch.from_numpy(to_network_input(frame, size))
    out = stages(image)
    onehot = one_hot(out.semantic)
    n = image.shape[0]
    levels = out.features[: len(net.encoder.out_channels)]
    f_img, f_syn = [f[:n] for f in levels], [f[n:] for f in levels]
    ms = median_ms(lambda: net.decode(f_img, f_syn, onehot, out.uncertainty), repeats)
    flops = call_flops(lambda: net.decode(f_img, f_syn, onehot, out.uncertainty).logits)
    achieved = flops / (ms / 1000.0)
    rows.append({"stage": "dissimilarity (shipped, decoder on shared features)", "size": f"{size[0]}x{size[1]}",
                 "backend": "torch", "ms": ms, "GFLOP": flops / 1e9, "GFLOP/s": achieved / 1e9,
                 "% of matmul peak": 100.0 * achieved / peak})
    graph = build_graph(SHIPPED_SCORE)
    # sustained, as a camera feeds it: the host's speed drifts, so the spread of the blocks is part of the result
    blocks, frames = sustained
    end_to_end_row(rows, f"end to end, shipped default ({SHIPPED_SCORE})", graph, frame, image, size, frames, blocks)
    # as the node runs it (frames_in_flight 2): two callers back to back, each frame alone on both threads or two
    # side by side on one thread each, whichever mgcda_core.runtime.lanes finds keeps up
    end_to_end_row(rows, f"end to end, shipped default ({SHIPPED_SCORE}), 2 frames in flight", graph, frame, image,
                   size, frames, blocks, in_flight=2)
    if not graph.share_features:
        # The same architecture with the encoder at ImageNet's statistics, as a frozen encoder now trains: the
        # graph runs the backbone once per image for both uses. Untrained decoder: the same cost as a trained one.
        architecture = net.architecture
        shared = DissimNetPrior(**architecture, weights=EncoderWeights.default_for(architecture["encoder"])).eval()
        end_to_end_row(rows, "end to end, shipped architecture with the backbone shared",
                       InferenceGraph(stages, SHIPPED_SCORE, shared), frame, image, size, repeats)


def end_to_end_row(rows: list[dict], label: str, graph: InferenceGraph, frame: np.ndarray, image: torch.Tensor,
                   size: tuple[int, int], repeats: int, blocks: int = 1, in_flight: int = 1) -> None:
    """Camera frame in, calibrated score map out: pre-processing, ``graph`` exported and run by ONNX Runtime,
    post-processing. ``blocks`` > 1: that many blocks of ``repeats`` frames back to back (sustained; each block
    after one untimed call, as ``times_ms`` does). ``in_flight`` > 1: that many threads share each block's frames,
    through a runtime that takes that many at once (``mgcda_core.runtime.lanes``); the label then also gives the
    share of frames run side by side. The label gives each block's frames/s and whether the CPUs shared a cache
    before and after it (``host.core_coupling``: a VM's two vCPUs may be moved between one chip and two while it
    runs, which moves this time by up to 1.6x), and ``ms`` the median time of a frame over all blocks."""
    from mgcda_core.runtime.factory import RuntimeOptions, make_runtime

    if blocks < 1 or repeats < 1 or in_flight < 1:
        raise ValueError(f"blocks, repeats and in_flight must be >= 1, got {blocks}, {repeats} and {in_flight}")
    runtime = make_runtime("onnxruntime", graph, "cpu", RuntimeOptions(input_size=size, frames_in_flight=in_flight))
    detector = Detector(runtime, graph.score, size)
    times, rates, couplings = [], [], []
    for _ in range(blocks):
        before = core_coupling()
        # no time budget: every block has its ``repeats`` frames, as the label says
        block, rate = sustained_frames(lambda: detector(frame), repeats, in_flight)
        times.append(block)
        rates.append(rate)
        couplings.append((before, core_coupling()))
    ms = statistics.median(t for block in times for t in block)
    text = ", ".join(f"{rate:.1f}{_mark(cache_sharing(*pair))}" for rate, pair in zip(rates, couplings))
    sustained = "" if blocks == 1 else f" {blocks} blocks of {repeats} frames:"
    runs = getattr(runtime, "runs", None)
    lanes = "" if runs is None else f" ({100.0 * runs['lanes'] / max(1, sum(runs.values())):.0f} % side by side)"
    stage = f"{label},{sustained} {text} frames/s{lanes}"
    rows.append({"stage": stage, "size": f"{size[0]}x{size[1]}", "backend": "onnxruntime", "ms": ms,
                 "GFLOP": call_flops(lambda: graph(image)) / 1e9, "GFLOP/s": None, "% of matmul peak": None})


def sustained_frames(fn: Callable[[], object], frames: int, callers: int = 1) -> tuple[list[float], float]:
    """``frames`` calls of ``fn`` shared by ``callers`` threads back to back, after one untimed call per thread:
    each call's wall time in ms, and calls per second over the whole block. One caller: ``times_ms`` without a
    budget, and its median time's rate (as earlier blocks were reported)."""
    if frames < 1 or callers < 1:
        raise ValueError(f"frames and callers must be >= 1, got {frames} and {callers}")
    if callers == 1:
        alone = times_ms(fn, frames, budget_s=math.inf)
        return alone, 1000.0 / statistics.median(alone)
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers)
    share = [frames // callers + (i < frames % callers) for i in range(callers)]

    def caller(count: int) -> None:
        fn()
        barrier.wait()
        for _ in range(count):
            start = time.perf_counter()
            fn()
            with lock:
                times.append(1000.0 * (time.perf_counter() - start))

    threads = [threading.Thread(target=caller, args=(count,)) for count in share]
    for thread in threads:
        thread.start()
    start = time.perf_counter()  # within a few microseconds of the barrier's release: negligible against a block
    for thread in threads:
        thread.join()
    return times, 1000.0 * frames / (1000.0 * (time.perf_counter() - start))


def _mark(sharing: str) -> str:
    return f" ({sharing})" if sharing in ("split", "mixed") else ""


def run(quick: bool) -> list[dict]:
    repeats = 3 if quick else 10
    sizes = [(256, 512)] if quick else [(256, 512), (512, 1024)]
    peak = matmul_peak(repeats)
    stages = InferenceStages.default()
    dissim_nets = {enc: DissimNetPrior(encoder=enc).eval() for enc in ("vgg16", "efficientnet_lite0")}
    frame = np.random.default_rng(0).integers(0, 256, (*CAMERA, 3), dtype=np.uint8)
    calibration = DEFAULT_CALIBRATION["max_logit"]
    rows: list[dict] = []

    def row(stage: str, size: tuple[int, int], ms: float, flops: int | None) -> None:
        achieved = None if flops is None else flops / (ms / 1000.0)
        rows.append({"stage": stage, "size": f"{size[0]}x{size[1]}", "backend": "torch", "ms": ms,
                     "GFLOP": None if flops is None else flops / 1e9,
                     "GFLOP/s": None if achieved is None else achieved / 1e9,
                     "% of matmul peak": None if achieved is None else 100.0 * achieved / peak})

    with torch.inference_mode():
        for size in sizes:
            image = torch.from_numpy(to_network_input(frame, size))
            logits = stages.segmentation(image)
            semantic = logits.argmax(1)
            synthesis = stages.resynthesis(semantic, image)
            normalised, syn_normalised = imagenet_normalise(image), imagenet_normalise(synthesis)
            prior = stages.uncertainty(logits, normalised, syn_normalised)
            onehot = one_hot(semantic)
            row("pre-processing", size, median_ms(lambda: to_network_input(frame, size), repeats), None)
            row("segmentation", size, median_ms(lambda: stages.segmentation(image), repeats),
                count_flops(stages.segmentation, image))
            row("resynthesis", size, median_ms(lambda: stages.resynthesis(semantic, image), repeats),
                call_flops(lambda: stages.resynthesis(semantic, image)))
            row("uncertainty", size, median_ms(lambda: stages.uncertainty(logits, normalised, syn_normalised), repeats),
                count_flops(stages.uncertainty, logits, normalised, syn_normalised))
            for encoder, net in dissim_nets.items():
                inputs = (normalised, syn_normalised, onehot, prior)
                row(f"dissimilarity ({encoder})", size, median_ms(lambda: net(*inputs), repeats),
                    call_flops(lambda: net(*inputs).logits))
            score = (-logits.amax(1, keepdim=True)).numpy()

            def post() -> np.ndarray:
                import cv2

                return calibration.in_place(cv2.resize(score[0, 0], (CAMERA[1], CAMERA[0]),
                                                       interpolation=cv2.INTER_LINEAR))

            row("post-processing", size, median_ms(post, repeats), None)
            # sustained at the deployment size only (the first); the larger size would add minutes
            sustained = SUSTAINED_FRAMES if not quick and size == sizes[0] else (1, repeats)
            shipped_rows(rows, stages, frame, size, repeats, peak, sustained)
    rows.append({"stage": "matmul peak (1024^3 fp32)", "size": "-", "backend": "torch", "ms": None, "GFLOP": None,
                 "GFLOP/s": peak / 1e9, "% of matmul peak": 100.0})
    return rows
