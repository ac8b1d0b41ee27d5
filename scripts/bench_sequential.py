"""Sequential vs full-set robust accuracy, and coverage under optional stopping, in one run.

(a) For small trained models (a resnet8 on the digits default split, 360 test images; a
    resnet8 trained on the first 5,000 images of the real MNIST test split and attacked on the
    other 5,000), PGD/FGSM robust accuracy on the
    whole set vs the sequential estimate (`craft(..., stop=StopRule(H))`): samples used, the
    interval, whether it holds the full-set value, and the measured wall times.
(b) Simulated Bernoulli sequences at several true rates, looked at every 10 samples: coverage of
    the hedged betting confidence sequence vs a Clopper-Pearson interval recomputed at every
    look, at the stopping rule's own stop and at every look (the worst stopping rule).

    PYTHONPATH=. python scripts/bench_sequential.py [--mnist ../shared/data/mnist] [--reps 2000]
"""

from __future__ import annotations

import argparse
import gzip
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from edgerob.host.attacks import craft, evaluate
from edgerob.host.data import load_dataset, read_idx
from edgerob.host.models import load_checkpoint
from edgerob.device.sequential import BettingCS, StopRule, planned_samples
from edgerob.host.train import TrainConfig, train


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(magic + dims + array.astype(np.uint8).tobytes()))


def mnist_split_model(root: Path, work: Path) -> Path:
    """resnet8 (width 8, 1 epoch) trained on test images 0-4999; its test split is 5000-9999."""
    images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    data = work / "mnist-split"
    data.mkdir()
    for split, sl in (("train", slice(0, 5000)), ("t10k", slice(5000, 10000))):
        write_idx(data / f"{split}-images-idx3-ubyte.gz", images[sl])
        write_idx(data / f"{split}-labels-idx1-ubyte.gz", labels[sl])
    folder = work / "mnist-model"
    train(TrainConfig(arch="resnet8", width=8, epochs=1, dataset="mnist", data_root=str(data),
                      robust_eval_samples=0), folder)
    return folder


def part_a(models: list[tuple[str, Path, float, list[tuple[str, float]]]]) -> list[dict]:
    print("\n(a) full set vs sequential (95%, seeded order, batches of 32), "
          "robust accuracy of the fp32 model")
    head = (f"{'model':<16}{'attack':<11}{'H':>5}{'N':>6}{'full':>8}{'seq':>8}"
            f"{'95% interval':>18}{'holds':>7}{'used':>12}{'full s':>8}{'seq s':>7}{'saved':>7}")
    print(head)
    rows = []
    for label, folder, h, attacks in models:
        model, card = load_checkpoint(folder)
        d = load_dataset(card.dataset, card.dataset_root)
        x, y, ids = d.x_test, d.y_test, np.arange(len(d.x_test))
        for attack, eps in attacks:
            t0 = time.perf_counter()
            full = evaluate(model, x, y, attack, eps, seed=0).robust_accuracy
            t_full = time.perf_counter() - t0
            t0 = time.perf_counter()
            s = craft(model, x, y, ids, attack, eps, stop=StopRule(h, 0.95), seed=0)
            t_seq = time.perf_counter() - t0
            q = s.params["sequential"]
            holds = q["ci_low"] <= full <= q["ci_high"]
            row = dict(model=label, attack=f"{attack}@{eps:g}", h=h, n=len(x), full=full,
                       seq=q["estimate"], lo=q["ci_low"], hi=q["ci_high"], holds=holds,
                       used=q["n_attacked"], t_full=t_full, t_seq=t_seq)
            rows.append(row)
            interval = f"[{q['ci_low']:.3f}, {q['ci_high']:.3f}]"
            used = f"{q['n_attacked']} ({q['n_attacked'] / len(x):.0%})"
            print(f"{label:<16}{row['attack']:<11}{h:>5g}{len(x):>6}{full:>8.3f}"
                  f"{q['estimate']:>8.3f}{interval:>18}{'yes' if holds else 'NO':>7}{used:>12}"
                  f"{t_full:>8.1f}{t_seq:>7.1f}{1 - t_seq / t_full:>7.0%}", flush=True)
    return rows


def clopper_pearson(k, n, confidence):
    a = 1 - confidence
    lo = np.where(k > 0, stats.beta.ppf(a / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - a / 2, k + 1, n - k), 1.0)
    return lo, hi


def part_b(rates, reps: int, h: float, horizon: int, look: int, seed: int) -> None:
    rule = StopRule(h, 0.95)
    print(f"\n(b) coverage under optional stopping: {reps} i.i.d. Bernoulli sequences per rate, "
          f"a look every {look} samples up to {horizon}; stop at the first look with half-width "
          f"<= {h:g} (95%)")
    print(f"{'rate':>6}{'CS @stop':>10}{'CS all looks':>14}{'CS n stop':>11}"
          f"{'CP @stop':>10}{'CP all looks':>14}{'CP n stop':>11}")
    rng = np.random.default_rng(seed)
    for p in rates:
        x = (rng.random((reps, horizon)) < p).astype(np.float64)
        cs = BettingCS(rule.confidence, reps=reps, grid=200, plan=planned_samples(rule))
        cs_all = np.ones(reps, bool)
        cp_all = np.ones(reps, bool)
        cs_stop = np.full(reps, -1)
        cp_stop = np.full(reps, -1)
        cs_hit = np.zeros(reps, bool)
        cp_hit = np.zeros(reps, bool)
        for t in range(look, horizon + 1, look):
            cs.update(x[:, t - look:t])
            inside = (cs.lo <= p) & (p <= cs.hi)
            cs_all &= inside
            now = (cs_stop < 0) & (cs.half_width <= h)
            cs_stop[now], cs_hit[now] = t, inside[now]
            lo, hi = clopper_pearson(x[:, :t].sum(1), t, rule.confidence)
            inside = (lo <= p) & (p <= hi)
            cp_all &= inside
            now = (cp_stop < 0) & ((hi - lo) / 2 <= h)
            cp_stop[now], cp_hit[now] = t, inside[now]
        for stop, hit, last in ((cs_stop, cs_hit, cs), (cp_stop, cp_hit, None)):
            undone = stop < 0  # never narrow enough by the horizon: judged at the horizon
            stop[undone] = horizon
            if last is not None:
                hit[undone] = ((last.lo <= p) & (p <= last.hi))[undone]
            else:
                lo, hi = clopper_pearson(x.sum(1), horizon, rule.confidence)
                hit[undone] = ((lo <= p) & (p <= hi))[undone]
        print(f"{p:>6.2f}{cs_hit.mean():>10.3f}{cs_all.mean():>14.3f}{np.median(cs_stop):>11.0f}"
              f"{cp_hit.mean():>10.3f}{cp_all.mean():>14.3f}{np.median(cp_stop):>11.0f}",
              flush=True)
    print("CS: hedged betting confidence sequence (edgerob.device.sequential); CP: Clopper-Pearson "
          "recomputed at every look.\n'@stop': covers at its own stopping rule's stop; 'all "
          "looks': covers at every look (= coverage under the worst stopping rule).")


def part_c(reps: int = 100, seed: int = 0) -> None:
    """The judged designs, simulated: finite sets of N drawn without replacement in batches of
    32 (as `craft` does), worst-case and typical rates."""
    print(f"\n(c) the judged designs on simulated sets ({reps} random orders each, batches of 32, "
          f"95%): samples used at the stop")
    rng = np.random.default_rng(seed)
    for n, h, p in ((5000, 0.05, 0.5), (5000, 0.05, 0.8), (360, 0.1, 0.5), (360, 0.1, 0.8)):
        k = int(round(p * n))
        x = np.stack([rng.permutation(np.r_[np.ones(k), np.zeros(n - k)]) for _ in range(reps)])
        rule = StopRule(h, 0.95)
        cs = BettingCS(0.95, population=n, reps=reps, plan=planned_samples(rule))
        stop, hit = np.full(reps, -1), np.zeros(reps, bool)
        for t in range(32, n + 1, 32):
            cs.update(x[:, t - 32:t])
            now = (stop < 0) & (cs.half_width <= h)
            stop[now], hit[now] = t, ((cs.lo <= k / n) & (k / n <= cs.hi))[now]
            if (stop > 0).all():
                break
        print(f"  N={n} H={h:g} true mean {p:g}: stopped at median {np.median(stop):.0f}, at most "
              f"{stop.max()} ({stop.max() / n:.0%} of N); interval held the set's mean in "
              f"{hit.mean():.0%}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", type=Path, default=Path(__file__).resolve().parents[1].parent
                    / "shared" / "data" / "mnist")
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--skip-models", action="store_true", help="only the simulation (b)")
    ap.add_argument("--models", default="digits,mnist", help="which of digits,mnist for (a)")
    ap.add_argument("--skip-simulation", action="store_true", help="only the models (a)")
    ap.add_argument("--design-only", action="store_true", help="only the design check (c)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"bench_sequential: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not (args.skip_models or args.design_only):
        wanted = args.models.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            models = []
            if "digits" in wanted:
                digits = Path(tmp) / "digits-model"
                train(TrainConfig(arch="resnet8", width=8, epochs=6, seed=1,
                                  robust_eval_samples=0), digits)
                models.append(("digits resnet8", digits, 0.1, [("pgd", 0.05), ("pgd", 0.1),
                                                              ("fgsm", 0.1)]))
            if "mnist" in wanted and args.mnist.is_dir():
                models.append(("mnist resnet8", mnist_split_model(args.mnist, Path(tmp)), 0.05,
                               [("fgsm", 0.1), ("pgd", 0.1)]))
            elif "mnist" in wanted:
                print(f"(no MNIST at {args.mnist}: the MNIST rows are skipped)")
            rows = part_a(models)
        print("\njudged cases:")
        for label, h, cap in (("digits resnet8", 0.1, 0.5), ("mnist resnet8", 0.05, 0.25)):
            for r in (r for r in rows if r["model"] == label):
                ok = r["holds"] and r["used"] <= cap * r["n"]
                print(f"  {label} {r['attack']} H={h:g}: interval holds the full-set value: "
                      f"{'yes' if r['holds'] else 'NO'}; used {r['used']}/{r['n']} "
                      f"(limit {cap:.0%}): {'PASS' if ok else 'FAIL'}")
    if not args.skip_simulation:
        part_c()
    if not (args.skip_simulation or args.design_only):
        part_b((0.05, 0.2, 0.5, 0.8, 0.95), args.reps, h=0.1, horizon=500, look=10, seed=17)
    return 0


if __name__ == "__main__":
    sys.exit(main())
