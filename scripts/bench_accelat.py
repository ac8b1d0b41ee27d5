"""AccelAT against constant and step learning-rate schedules in adversarial training, one run.

Same model (resnet8, width 8 by default), same data (digits; 10% of the training split held out
for every schedule, since AccelAT watches it), same budget (epochs), same seed, same adversarial
training (FGSM-RS at eps 0.1 by default, with the catastrophic-overfitting guard); only the
learning-rate schedule differs:
- constant: lr throughout;
- step: lr x gamma (0.1) every epochs // 3 epochs (AccelAT's "piecewise" baseline);
- accelat: AccelAT's controller with its defaults (k=5, patience=5, threshold 0.005, factor 0.8,
  floor 1e-6) on robust validation accuracy (PGD-5 on the held-out images).
All start from the same lr (0.05, SGD with Nesterov momentum 0.9, as edgerob trains).

After every epoch the test split's robust accuracy is measured with edgerob.host.attacks.evaluate
(PGD-10, alpha 2.5*eps/steps, random start, seed 0; not counted as training time). Reported per
schedule: the training time (the card's train_time_s: training, attack generation, and each
schedule's own overhead, i.e. AccelAT's validation and the overfitting check) until the test
robust accuracy first reaches the target, or "not reached"; the final clean and robust accuracy;
the best robust accuracy; and the lr trace. Times are CPU seconds of wall clock on whatever runs
it: compare rows of one run only.

    .venv/bin/python scripts/bench_accelat.py [--epochs 20] [--target 0.70] [--eps 0.1]
        [--adversarial fgsm-rs|pgd] [--width 8] [--threads 1] [--seeds 0,1] [--curves]
        [--schedules accelat,constant,step[,cosine]]

Within a seed the runs are identical until a schedule first changes the lr (same init, order,
attack starts): accelat and constant share every epoch before AccelAT's first cut, which cannot
come before epoch k + 2 = 7. The per-epoch robust accuracy on 360 test images moves by a few
points from epoch to epoch, so "time to target" is coarse: read it with the curves.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from edgerob.host.attacks import evaluate as attack_eval
from edgerob.host.data import load_dataset
from edgerob.host.train import TrainConfig, train

SCHEDULES = ("accelat", "constant", "step")  # --schedules may add cosine or onecycle


def run(schedule: str, args, seed: int, data) -> dict:
    cfg = TrainConfig(arch="resnet8", width=args.width, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, seed=seed,
                      adversarial=args.adversarial, eps=args.eps, steps=args.steps,
                      lr_schedule=schedule, val_fraction=0.1, robust_eval_samples=0)
    curve = []

    def on_epoch(r):
        res = attack_eval(r.model, data.x_test, data.y_test, "pgd", args.eps, seed=0,
                          steps=10)
        curve.append((r.epoch, r.train_time_s, res.clean_accuracy, res.robust_accuracy, r.lr))

    t0 = time.perf_counter()
    _, card = train(cfg, dataset=data, on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    hit = next(((e, t) for e, t, _, rob, _ in curve if rob >= args.target), None)
    return {"schedule": schedule, "seed": seed, "curve": curve, "card": card, "wall": wall,
            "hit": hit, "final_clean": curve[-1][2] if curve else None,
            "final_robust": curve[-1][3] if curve else None,
            "best_robust": max((c[3] for c in curve), default=None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.70, help="test robust accuracy to reach")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--adversarial", default="fgsm-rs", choices=("fgsm-rs", "pgd"))
    ap.add_argument("--steps", type=int, default=3, help="PGD steps when --adversarial pgd")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    ap.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated")
    ap.add_argument("--curves", action="store_true", help="print every epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    seeds = [int(s) for s in args.seeds.split(",")]
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    print(f"resnet8 w{args.width} on digits ({len(data.x_train)} train images, 10% held out "
          f"for validation; {len(data.x_test)} test), {args.adversarial} at eps {args.eps:g}, "
          f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, "
          f"{args.threads} thread(s); target: PGD-10 test robust accuracy >= {args.target:.0%}")
    results = []
    for seed in seeds:
        for s in schedules:  # one schedule after the other, same process
            r = run(s, args, seed, data)
            results.append(r)
            c = r["card"]
            hit = (f"epoch {r['hit'][0]:>2}, {r['hit'][1]:6.1f} s" if r["hit"]
                   else "not reached      ")
            print(f"seed {seed} {s:<9} to target: {hit}  final clean {r['final_clean']:.1%} "
                  f"robust {r['final_robust']:.1%} (best {r['best_robust']:.1%})  train "
                  f"{c.train_time_s:6.1f} s over {c.epochs_run} epochs"
                  f"{' STOPPED EARLY' if c.stopped_early else ''}  lr "
                  f"{c.lr_schedule['lr_trace'][0]:g} -> {r['curve'][-1][4]:.3g}", flush=True)
            if args.curves:
                for e, t, clean, rob, lr in r["curve"]:
                    print(f"    epoch {e:>2} {t:6.1f} s clean {clean:.1%} robust {rob:.1%} "
                          f"lr for the next epoch {lr:.3g}")
            if s == "accelat":
                print(f"    accelat cut the lr after epochs "
                      f"{c.lr_schedule['options']['changes_after_epochs'] or 'none'}")
    if len(seeds) > 1:
        print("medians over seeds:")
        for s in schedules:
            rs = [r for r in results if r["schedule"] == s]
            times = [r["hit"][1] for r in rs if r["hit"]]
            print(f"  {s:<9} reached {len(times)}/{len(rs)}"
                  f"{f', median time {statistics.median(times):.1f} s' if times else ''}; "
                  f"final robust {statistics.median(r['final_robust'] for r in rs):.1%}, "
                  f"clean {statistics.median(r['final_clean'] for r in rs):.1%}")


if __name__ == "__main__":
    main()
