"""Attack overhead: edgerob.host.attacks.evaluate vs torchattacks.PGD called directly, same work.

One run, one model (the cached default digits ResNet-8), one batch (the first 256 test images),
PGD L-inf eps 0.1, 10 steps, alpha 2.5*eps/steps, random start, seed 0, the same torch thread
count. Rounds alternate (edgerob, bare, bare attack only, edgerob, ...) so drift on a shared
machine hits all alike; medians of the per-round wall times and their ratios are printed, and the
adversarial images of both paths are checked to be identical.

What each timing includes (perf_counter around the whole call):
- edgerob: `evaluate(model, x, y, "pgd", 0.1, batch_size=256, seed=0)`: input checks, seeding
  (with the caller's generator restored afterwards), a one-image probe forward (class count, label
  range), the clean forward, the attack, the projection into the eps-ball, the adversarial
  forward, and the AttackResult (numpy copies of the images and per-sample masks).
- bare: `torch.manual_seed(0)`, `torchattacks.PGD(...)(x, y)`, plus a clean and an adversarial
  forward under `torch.inference_mode()` with argmax to get clean and robust accuracy: the least
  a user needs to get the same numbers from torchattacks.
- bare attack only: the seeding and the torchattacks call, no accuracy (printed for reference;
  the gap to it is the price of the two accuracy forwards both paths need).
Goal: edgerob / bare <= 1.05.

    .venv/bin/python scripts/bench_attacks.py [--rounds 5] [--threads 1] [--n 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torchattacks

from edgerob.host.attacks import evaluate
from edgerob.host.data import load_dataset
from edgerob.host.models import load_checkpoint
from edgerob.host.train import default_model

EPS, STEPS, SEED = 0.1, 10, 0


def bare(model, x, y, with_accuracy: bool):
    torch.manual_seed(SEED)
    atk = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS,
                           random_start=True)
    adv = atk(x, y)
    if not with_accuracy:
        return adv, None, None
    with torch.inference_mode():
        clean_ok = model(x).argmax(1) == y
        robust_ok = clean_ok & (model(adv).argmax(1) == y)
    return adv, float(clean_ok.float().mean()), float(robust_ok.float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    folder, _ = default_model()
    model, card = load_checkpoint(folder)
    data = load_dataset(card.dataset)
    x_np = np.ascontiguousarray(data.x_test[:args.n])
    y_np = np.ascontiguousarray(data.y_test[:args.n])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)

    # warm-up and a same-work check: identical adversarial images and accuracies
    r = evaluate(model, x_np, y_np, "pgd", EPS, batch_size=args.n, seed=SEED)
    adv, clean_acc, robust_acc = bare(model, x, y, with_accuracy=True)
    same = np.array_equal(r.adversarial, adv.numpy())
    print(f"model {card.name} ({folder.name}), {args.n} images, PGD eps {EPS} x {STEPS} steps, "
          f"torch {torch.__version__}, {args.threads} thread(s), {args.rounds} rounds")
    print(f"identical adversarial images: {same}; clean {r.clean_accuracy:.4f} vs "
          f"{clean_acc:.4f}, robust {r.robust_accuracy:.4f} vs {robust_acc:.4f}")

    ours, theirs, attack_only = [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        evaluate(model, x_np, y_np, "pgd", EPS, batch_size=args.n, seed=SEED)
        t1 = time.perf_counter()
        bare(model, x, y, with_accuracy=True)
        t2 = time.perf_counter()
        bare(model, x, y, with_accuracy=False)
        t3 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        attack_only.append(t3 - t2)
    a, b, c = (statistics.median(v) for v in (ours, theirs, attack_only))
    print(f"{'path':<34} {'median s':>9} {'min s':>8} {'max s':>8}")
    for name, v in (("edgerob evaluate", ours), ("torchattacks.PGD + 2 accuracy fwd", theirs),
                    ("torchattacks.PGD only", attack_only)):
        print(f"{name:<34} {statistics.median(v):>9.4f} {min(v):>8.4f} {max(v):>8.4f}")
    print(f"ratio edgerob / bare (same work): {a / b:.3f}  (goal <= 1.05)")
    print(f"ratio edgerob / bare attack only: {a / c:.3f}")


if __name__ == "__main__":
    main()
