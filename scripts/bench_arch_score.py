"""Does the NTK at initialisation rank ResNets by robust accuracy on digits? (issue 10)

Scores 6 architectures (depths 8, 14, 20 x widths 4, 8) at initialisation with
`edgerob.host.ntk.arch_scores`, then trains each standard and with FGSM-RS adversarial training at a
small budget (`edgerob.host.ntk.validate`), and prints each score's Spearman / Kendall correlation
(95% seeded bootstrap intervals over architectures) with measured robust (and clean) accuracy,
plus the seconds spent scoring vs training. About 1 minute on one CPU thread.

    python scripts/bench_arch_score.py [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from edgerob.host.ntk import METRICS, parse_archs, validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="8,14,20")
    ap.add_argument("--widths", default="4,8")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--adversarial", default="fgsm-rs")
    ap.add_argument("--robust-eval-samples", type=int, default=150)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: steady on shared cores)")
    ap.add_argument("--json", default=None, help="also write the full result here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    archs = parse_archs([int(d) for d in a.depths.split(",")],
                        [int(w) for w in a.widths.split(",")])
    t0 = time.perf_counter()
    res = validate(archs, epochs=a.epochs, eps=a.eps, adversarial=a.adversarial,
                   robust_eval_samples=a.robust_eval_samples, batch=a.batch, seed=a.seed,
                   on_arch=lambda r: print(f"  trained {r['arch']} w{r['width']}", flush=True))
    total = time.perf_counter() - t0
    print(f"\n{len(archs)} architectures, digits, {a.epochs} epochs, {a.adversarial} at eps "
          f"{a.eps:g}, robust = PGD-10 on {a.robust_eval_samples} test images, NTK batch "
          f"{a.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'arch':>10} {'w':>2} {'params':>7} {'std clean':>9} {'std rob':>8} {'adv clean':>9} "
          f"{'adv rob':>8} {'score s':>8} {'train s':>8}")
    for r in res["archs"]:
        print(f"{r['arch']:>10} {r['width']:>2} {r['parameters']:>7} {r['std_clean']:>9.3f} "
              f"{r['std_robust']:>8.3f} {r['adv_clean']:>9.3f} {r['adv_robust']:>8.3f} "
              f"{r['clean_s'] + r['adv_s']:>8.2f} {r['std_wall_s'] + r['adv_wall_s']:>8.1f}")
    print("\nSpearman rho [95% CI] (Kendall tau) of each score with each measured metric:")
    print(f"{'score':>15} " + " ".join(f"{m:>27}" for m in METRICS))
    for key, per in res["correlations"].items():
        cells = []
        for m in METRICS:
            c = per[m]
            cells.append("—".rjust(27) if c["spearman"] is None else
                         f"{c['spearman']:+.2f} [{c['spearman_lo']:+.2f},{c['spearman_hi']:+.2f}]"
                         f" ({c['kendall']:+.2f})".rjust(27))
        print(f"{key:>15} " + " ".join(cells))
    c = res["compute"]
    print(f"\ncompute: scoring {c['score_s']:.1f} s, training {c['train_wall_s']:.1f} s wall "
          f"({c['train_s']:.1f} s in the training loop): {c['speedup']:.0f}x, "
          f"{c['saved_fraction']:.1%} saved; bench total {total:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
