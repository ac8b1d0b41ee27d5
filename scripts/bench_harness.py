"""Harness overhead: edgerob's reported p50 latency vs a bare onnxruntime loop, same file and threads.

Both measure the same fp32 ONNX artifact of the default model at each batch size with the same
intra-op thread count. Rounds alternate (edgerob, bare, edgerob, bare, ...) so drift on a shared
machine hits both alike; the ratio of the medians of the per-round p50s is printed.
Goal (issue 2): ratio <= 1.03 at batch 1.

    .venv/bin/python scripts/bench_harness.py [--rounds 5] [--seconds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from edgerob.device.bench import TimingRules, measure
from edgerob.host.data import load_dataset
from edgerob.host.export import export
from edgerob.host.models import load_card
from edgerob.device.runtimes import create_runtime
from edgerob.host.train import default_model


def bare_p50_ms(path: str, x: np.ndarray, threads: int, seconds: float) -> float:
    """The simplest honest loop: one session, one pre-made batch, perf_counter around run()."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:  # same warm-up as edgerob's default
        sess.run(None, {name: x})
    lat = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        if t1 >= end:
            return float(np.percentile(lat, 50) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,8,32")
    args = ap.parse_args()

    model_dir, _ = default_model()
    art = export(model_dir, precisions=["fp32"])["fp32"]
    card = load_card(model_dir)
    data = load_dataset(card.dataset)
    rules = TimingRules(warmup_s=0.2, min_duration_s=args.seconds, min_iterations=10)
    rt = create_runtime("onnxruntime", art.path, threads=args.threads)
    print(f"artifact {art.path} (sha256 {art.sha256[:12]}), threads {args.threads}, "
          f"{args.rounds} alternating rounds of {args.seconds} s, ort {ort.__version__}")
    print(f"{'batch':>5} {'edgerob p50 ms':>15} {'bare p50 ms':>12} {'ratio':>7}")
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        ours, bare = [], []
        for _ in range(args.rounds):
            m = measure(rt, data.x_test, data.y_test, bs, rules)
            ours.append(m.latency_p50_ms)
            bare.append(bare_p50_ms(art.path, np.ascontiguousarray(data.x_test[:bs]),
                                    args.threads, args.seconds))
        a, b = statistics.median(ours), statistics.median(bare)
        print(f"{bs:>5} {a:>15.4f} {b:>12.4f} {a / b:>7.3f}")


if __name__ == "__main__":
    main()
