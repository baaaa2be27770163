"""Run every benchmark section (or those named) and print one table per section."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

import torch

from mgcda_core.benchmark.host import core_coupling
from mgcda_core.utils.atomic import atomic_write_json
from mgcda_core.utils.cli import user_errors

# Section name -> module in mgcda_core.benchmark providing run(quick: bool) -> list[dict].
SECTIONS = {
    "pipeline": "mgcda_core.benchmark.pipeline",
    "runtimes": "mgcda_core.benchmark.runtimes",
    "gpu_runtimes": "mgcda_core.benchmark.gpu_runtimes",
    "training": "mgcda_core.benchmark.training",
}


def format_table(rows: list[dict]) -> str:
    """Plain-text table with the union of the rows' keys as columns."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(cell(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


@user_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_core.benchmark", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"sections to run, of {sorted(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and the small sizes only")
    parser.add_argument("--out", help="also write all rows as JSON to this file")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; expected some of {sorted(SECTIONS)}")
    names = args.sections or list(SECTIONS)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    coupling = core_coupling()
    if coupling is not None:  # a VM's vCPUs may not behave as one chip, and that moves every multi-thread time
        print(f"at start: {coupling.describe()}")
    results: dict[str, list[dict]] = {}
    for name in names:
        module = importlib.import_module(SECTIONS[name])
        print(f"\n== {name} ==", flush=True)
        rows = module.run(quick=args.quick)
        results[name] = rows
        print(format_table(rows), flush=True)
    if args.out:
        atomic_write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
