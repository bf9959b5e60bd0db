"""Fuzz every untrusted input past the radio: NDEF, MQTT payloads, signed bundles, deltas.

The targets (:mod:`benchmarks.fuzz_targets`) run one after another in this process on
real components in a scratch directory; hypothesis draws the inputs
(:mod:`benchmarks.fuzz_schemas`). One line per target: inputs, failures (exceptions
escaped, or a run invariant broken), the slowest input, the traced memory peak and its
growth over the run. The last line is ``fuzz-inputs: N inputs, F failures``; the exit
status is 1 when F > 0 or a target's peak passes ``--max-peak-mib``.

    python -m benchmarks.fuzz_inputs                  # bounded: 11 s a target, under 60 s in all
    python -m benchmarks.fuzz_inputs --budget 160 --seed 7 -v        # the longer run
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from benchmarks.fuzz_engine import FuzzResult, print_kept, quiet_logs, run_target
from benchmarks.fuzz_targets import TARGETS, Rig, build_target

__all__ = ["main", "run_all"]


def run_all(names: list[str], *, count: int, budget_s: float, seed: int, hang_s: float | None,
            root: Path, variants: int = 20) -> list[FuzzResult]:
    """Each target in turn, with ``count`` inputs or ``budget_s`` seconds at most."""
    with quiet_logs():
        rig = Rig(root)
    results = []
    try:
        for name in names:
            target = build_target(name, rig)
            try:
                results.append(run_target(target, count=count, budget_s=budget_s, seed=seed,
                                          hang_s=hang_s, variants=variants))
            finally:
                target.close()
            print(results[-1].line(), flush=True)
    finally:
        rig.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1_000_000,
                        help="drawn inputs per target at most (each with its variants)")
    parser.add_argument("--budget", type=float, default=11.0, help="seconds per target at most")
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--variants", type=int, default=20,
                        help="cheap variants (byte and node edits) fed after each drawn input")
    parser.add_argument("--hang", type=float, default=20.0,
                        help="seconds one input may take before the run is ended as hung")
    parser.add_argument("--max-peak-mib", type=float, default=512.0,
                        help="traced memory peak per target above which the run fails")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also what the inputs did, per target (the refusal counters)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="only these targets (repeatable); default: all")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    names = args.target or list(TARGETS)
    print(f"fuzz-inputs: seed={seed} targets={','.join(names)} count<={args.count:,} "
          f"budget<={args.budget:g} s each", flush=True)
    with tempfile.TemporaryDirectory(prefix="aislecast-fuzz-") as tmp:
        results = run_all(names, count=args.count, budget_s=args.budget, seed=seed,
                          hang_s=args.hang, root=Path(tmp), variants=args.variants)
    failures = 0
    for res in results:
        if args.verbose:
            print(f"  {res.name} outcomes: "
                  + ", ".join(f"{k}={v:,}" for k, v in sorted(res.outcomes.items())))
        print_kept(res)
        failures += res.failures
        if res.peak_mib > args.max_peak_mib:
            failures += 1
            print(f"{res.name}: traced memory peaked at {res.peak_mib:.0f} MiB, above "
                  f"--max-peak-mib {args.max_peak_mib:g}", file=sys.stderr)
    print(f"fuzz-inputs: {sum(r.inputs for r in results):,} inputs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
