"""Adversarial vs clean latency: the old sequential cells against paired, interleaved rounds.

On the default model's quick-profile workload (fp32/fp16/int8 x batch 1/8/32, clean and PGD@0.1
images, the same ONNX artifacts and onnxruntime sessions for both methods), each repetition runs:

- sequential (edgerob 0.2.0's sweep): every clean cell, then every PGD cell, each timed alone;
  the ratio of the two p50s of a cell is read minutes apart;
- paired (0.3.0): each cell's clean and PGD images timed in alternating rounds of one session
  (`edgerob.device.bench.measure_sets`), the paired ratio with its 95% interval.

The truth is 1.00 here: a CPU runs these dense convolutions in data-independent time (checked by
both methods agreeing when nothing drifts). Printed: every cell's ratio in each repetition, and
the spread. Goal (issue 20): the paired ratio within 2% of 1.00 in every cell, run after run.
`--load N` runs N busy processes beside the measurement, as a shared machine would.

    .venv/bin/python scripts/bench_adv_latency.py [--repeats 3] [--load 0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
from datetime import datetime, timezone

import onnxruntime as ort

from edgerob.catalog.profiles import load_profile
from edgerob.device.bench import measure, measure_sets
from edgerob.device.runtimes import create_runtime
from edgerob.device.sweep import versus_clean
from edgerob.host.train import default_model
from edgerob.host.workload import prepare_workload


def _busy(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=0, help="busy processes running beside")
    args = ap.parse_args()

    profile = load_profile("quick")
    model_dir, _ = default_model()
    work = prepare_workload(profile, model_dir)
    adv = next(s for s in profile.input_sets if s != "clean")
    timing = profile.timing
    cells = [(p, b) for p in profile.precisions for b in profile.batch_sizes]
    runtimes = {p: create_runtime("onnxruntime", work.artifacts[p].path,
                                  batch_sizes=profile.batch_sizes) for p in profile.precisions}
    sets = {name: (work.inputs[name].images, work.inputs[name].labels)
            for name in ("clean", adv)}
    print(f"bench_adv_latency: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, "
          f"{mp.cpu_count()} cores, {args.load} busy process(es) beside")
    print(f"model {work.model}, input sets clean and {adv} ({len(sets['clean'][0])} images), "
          f"timing {timing.min_duration_s:g} s per set in {timing.rounds} rounds, "
          f"{args.repeats} repetitions")

    stop_at = time.time() + 24 * 3600
    load = [mp.Process(target=_busy, args=(stop_at,), daemon=True) for _ in range(args.load)]
    for proc in load:
        proc.start()
    seq = {c: [] for c in cells}
    par = {c: [] for c in cells}
    try:
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            clean = {(p, b): measure(runtimes[p], *sets["clean"], b, timing) for p, b in cells}
            for p, b in cells:
                seq[(p, b)].append(measure(runtimes[p], *sets[adv], b, timing).latency_p50_ms
                                   / clean[(p, b)].latency_p50_ms)
            t1 = time.perf_counter()
            for p, b in cells:
                ms = measure_sets(runtimes[p], sets, b, timing)
                par[(p, b)].append(versus_clean(ms[adv], ms["clean"]))
            print(f"repetition {rep + 1}: sequential {t1 - t0:.0f} s, paired "
                  f"{time.perf_counter() - t1:.0f} s")
    finally:
        for proc in load:
            proc.terminate()

    print(f"\n{'cell':<10} {'sequential p50 ratio, per repetition':<38} "
          f"{'paired ratio [95% interval], per repetition'}")
    for p, b in cells:
        s = " ".join(f"{r:6.3f}" for r in seq[(p, b)])
        q = "  ".join(f"{c['latency_vs_clean_ratio']:.3f} [{c['latency_vs_clean_low']:.3f}, "
                      f"{c['latency_vs_clean_high']:.3f}]" for c in par[(p, b)])
        print(f"{p} b{b:<4} {s:<38} {q}")
    seq_all = [r for rs in seq.values() for r in rs]
    par_all = [c["latency_vs_clean_ratio"] for cs in par.values() for c in cs]
    covers = sum(c["latency_vs_clean_low"] <= 1 <= c["latency_vs_clean_high"]
                 for cs in par.values() for c in cs)
    print(f"\nsequential: ratios {min(seq_all):.3f}-{max(seq_all):.3f}, "
          f"max |ratio - 1| {max(abs(r - 1) for r in seq_all):.3f}")
    print(f"paired:     ratios {min(par_all):.3f}-{max(par_all):.3f}, "
          f"max |ratio - 1| {max(abs(r - 1) for r in par_all):.3f}; "
          f"95% intervals holding 1.00: {covers}/{len(par_all)}")
    worst = max(abs(r - 1) for r in par_all)
    print(f"goal (paired within 2% of 1.00 in every cell and repetition): "
          f"{'PASS' if worst <= 0.02 else 'FAIL'}")


if __name__ == "__main__":
    main()
