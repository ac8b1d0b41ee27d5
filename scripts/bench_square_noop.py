"""Square's no-op candidates: the official resampling vs querying them (the code before the fix).

Runs edgerob's Square (official square_attack_linf: a patch that would leave the image unchanged
is redrawn before querying) and the same code with that test disabled, on the same fp32 ONNX
artifact, samples, batch size and seed. Prints, for each, the share of attacked-sample queries
spent on a candidate equal to the current best image, and the Kaplan-Meier median queries and
wall time to failure, with the ratio (disabled / official).

    .venv/bin/python scripts/bench_square_noop.py [--model DIR | --width W --epochs E]
        [--samples 64] [--budget 1000] [--eps 0.1] [--batch-size 8] [--p-init 0.05]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

from edgerob.device import failures
from edgerob.host.data import load_dataset
from edgerob.host.export import export
from edgerob.device.failures import km_median, margin, square_attack
from edgerob.host.models import load_card
from edgerob.device.runtimes import create_runtime
from edgerob.host.train import TrainConfig, default_model


class Recording:
    """The runtime, keeping every batch and its logits to count no-op candidates afterwards."""

    def __init__(self, rt):
        self.rt, self.calls = rt, []

    def run(self, x):
        out = self.rt.run(x)
        self.calls.append((x.copy(), out))
        return out


def count_noops(calls, y) -> tuple[int, int]:
    """(no-op, all) (sample, query) pairs of one batch's attack: a candidate equal to that
    sample's best image so far, replaying the strict acceptance rule. calls[0] is the clean
    pass, calls[1] the stripes."""
    best, out = calls[1]
    best, m_best = best.copy(), margin(out, y)
    noop = total = 0
    for cand, out in calls[2:]:
        active = m_best > 0
        same = np.all(np.abs(cand - best) < 1e-7, axis=(1, 2, 3))
        noop += int((same & active).sum())
        total += int(active.sum())
        m = margin(out, y)
        better = active & (m < m_best)
        best[better], m_best[better] = cand[better], m[better]
    return noop, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: the default resnet8 on digits, "
                                    "trained once with --width and --epochs)")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--p-init", type=float, default=0.05)  # the official L-inf default
    args = ap.parse_args()

    model_dir = args.model or default_model(TrainConfig(width=args.width,
                                                        epochs=args.epochs))[0]
    art = export(model_dir, precisions=["fp32"])["fp32"]
    data = load_dataset(load_card(model_dir).dataset)
    rt = create_runtime("onnxruntime", art.path, threads=1)
    bs = args.batch_size
    x, y = data.x_test[:args.samples], data.y_test[:args.samples]
    keep = failures.clean_correct(rt, x, y, bs)
    n = int(keep.sum()) // bs * bs  # full batches of clean-correct samples: no padding
    x, y = x[keep][:n], y[keep][:n]
    print(f"{model_dir} fp32 ONNX (sha256 {art.sha256[:12]}), images {x.shape[1:]}, "
          f"{n} clean-correct samples, batch {bs}, eps {args.eps}, budget {args.budget}, "
          f"p_init {args.p_init}, ort {ort.__version__}")
    print(f"{'variant':>22} {'no-op queries':>14} {'median queries':>15} {'median time s':>14}")
    medians = {}
    for name, tol in (("official (resampled)", failures.NO_CHANGE_TOL), ("no-ops queried", -1.0)):
        failures.NO_CHANGE_TOL = tol  # -1: no window ever counts as unchanged
        noop = total = 0
        recs = []
        for b in range(0, n, bs):
            rec = Recording(rt)
            cell = square_attack(rec, x[b:b + bs], y[b:b + bs], np.arange(b, b + bs), args.eps,
                                 args.budget, bs, p_init=args.p_init, seed=b)
            k, t = count_noops(rec.calls, y[b:b + bs])
            noop, total, recs = noop + k, total + t, recs + cell.records
        ev = [r.event for r in recs]
        q = km_median([r.queries for r in recs], ev)
        d = km_median([r.duration_s for r in recs], ev)
        medians[name] = (q, d)
        print(f"{name:>22} {noop / total:>14.1%} {q if q else '—':>15} "
              f"{d if d else float('nan'):>14.4f}")
    (q0, d0), (q1, d1) = medians.values()
    if q0 and q1:
        print(f"ratio no-ops queried / official: queries {q1 / q0:.2f}, time {d1 / d0:.2f}")


if __name__ == "__main__":
    main()
