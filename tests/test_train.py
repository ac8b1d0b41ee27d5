"""Training: AccelAT's rule, the catastrophic-overfitting guard, adversarial training, the defence
layers through ONNX export, precisions, schedules, the CLI, and that the default is unchanged.

Budgets are tiny (resnet8 at width 4-8, 1-3 epochs, a few hundred digits images) and every
test runs single-threaded: the machine is small and shared.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgerob.host import train as train_mod
from edgerob.host.data import load_digits
from edgerob.errors import EdgerobError
from edgerob.host.models import (OUTPUT_NOISE_ROWS, OutputNoise, Squeeze, build_model, load_checkpoint)
from edgerob.host.train import AccelATController, EpochReport, TrainConfig, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def subset(data, n_train: int, n_test: int | None = None):
    """The first images of each split (the digits split is stratified and shuffled)."""
    n_test = len(data.x_test) if n_test is None else n_test
    return dataclasses.replace(data, x_train=data.x_train[:n_train],
                               y_train=data.y_train[:n_train], x_test=data.x_test[:n_test],
                               y_test=data.y_test[:n_test])


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- AccelAT controller ---------------------------------------------------------------------

def run_controller(accuracies, **kw) -> list[float]:
    c = AccelATController(**kw)
    return [c.step(a) for a in accuracies]


def test_accelat_defaults_flat_accuracy_exact_trace():
    """k=5, patience=5, threshold 0.005, factor 0.8, floor 1e-6. A flat accuracy never improves
    the mean: the first cut needs more than 5 earlier means (after epoch 7), then one cut every
    5 epochs (after 12, 17). step() returns the lr for the next epoch."""
    trace = run_controller([0.5] * 20, lr=1e-3)
    expected = [1e-3] * 6 + [8e-4] * 5 + [6.4e-4] * 5 + [5.12e-4] * 4
    assert trace == pytest.approx(expected, rel=1e-12)
    c = AccelATController(lr=1e-3)
    for a in [0.5] * 20:
        c.step(a)
    assert c.changes == [7, 12, 17]


def test_accelat_scripted_sequence_exact_trace():
    """k=2, patience=2, threshold 0.125, factor 0.5, floor 0.2 by hand:
    epoch  acc   mean(last 2)  earlier means  rise    cut?
    1      0     0             0              -       no (needs > 2 earlier means)
    2      .5    .25           1              -       no
    3      .5    .5            2              -       no
    4      .75   .625          3              .125    no: a rise equal to the threshold
    5      1     .875          4              .25     no
    6      1     1             5              .125    no (equal again)
    7      1     1             6              0       yes: 1 -> .5
    8      1     1             7              0       no: 1 epoch since the cut < patience 2
    9      .5    .75           8              -.25    yes: .5 -> .25
    10     .5    .5            9              -.25    no: patience
    11     .5    .5            10             0       yes: .25 -> .125, floored to .2
    12     1     .75           11             .25     no: patience (and it rose)
    13     1     1             12             .25     no: rose enough
    14     1     1             13             0       yes: .2 * .5 floored to .2
    """
    accs = [0, .5, .5, .75, 1, 1, 1, 1, .5, .5, .5, 1, 1, 1]
    trace = run_controller(accs, k=2, patience=2, threshold=0.125, factor=0.5, floor=0.2,
                           lr=1.0)
    assert trace == [1, 1, 1, 1, 1, 1, .5, .5, .25, .25, .2, .2, .2, .2]


def test_accelat_matches_the_reference_counter_formulation():
    """The original callback (farzadnikfam/AccelAT function_callback.py), transcribed: a quiet
    counter starting at `patience`, +1 per epoch, a cut when it exceeds `patience`, reset to 1;
    the mean sliced as acc_list[len - k:len] (a quirk for the first epochs that never reaches a
    decision). Same learning rates on random sequences."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        k, patience = int(rng.integers(1, 6)), int(rng.integers(0, 6))
        threshold, factor = float(rng.choice([0.0, 0.005, 0.02])), float(rng.choice([0.5, 0.8]))
        floor, lr = 1e-3, 0.01
        accs = list(np.round(np.clip(np.cumsum(rng.normal(0.01, 0.02, 40)), 0, 1), 3))
        acc_list, mean_list, quiet, ref_lr, ref = [], [], patience, lr, []
        for a in accs:
            acc_list.append(a)
            n = len(acc_list)
            mean = float(np.mean(acc_list[n - k:n]))
            quiet += 1
            if len(mean_list) > k and quiet > patience and mean - mean_list[-1] < threshold:
                ref_lr *= factor
                quiet = 1
            ref_lr = max(ref_lr, floor)
            mean_list.append(mean)
            ref.append(ref_lr)
        ours = run_controller(accs, k=k, patience=patience, threshold=threshold, factor=factor,
                              floor=floor, lr=lr)
        assert ours == pytest.approx(ref, rel=1e-12), (trial, k, patience)


# --- training with AccelAT and the other schedules -------------------------------------------

def test_schedules_lr_traces(digits):
    data = subset(digits, 96, 40)
    base = dict(width=4, epochs=3, batch_size=32, lr=0.1, robust_eval_samples=0)
    _, c = train(TrainConfig(**base, lr_schedule="constant"), dataset=data)
    assert c.lr_schedule["name"] == "constant" and c.lr_schedule["lr_trace"] == [0.1] * 3
    _, c = train(TrainConfig(**base, lr_schedule="step", step_size=1, gamma=0.5), dataset=data)
    assert c.lr_schedule["lr_trace"] == pytest.approx([0.1, 0.05, 0.025])
    _, c = train(TrainConfig(**base, lr_schedule="onecycle"), dataset=data)
    t = c.lr_schedule["lr_trace"]
    assert t[0] == pytest.approx(0.1 / 25) and t[1] > t[0]  # warm-up from max_lr / 25
    _, c = train(TrainConfig(**base), dataset=data)
    assert c.lr_schedule["name"] == "cosine" and c.lr_schedule["lr_trace"][0] == 0.1
    assert c.lr_schedule["lr_trace"][1] < 0.1


def test_accelat_training_uses_a_validation_split_and_records_its_trace(digits, monkeypatch):
    """AccelAT watches accuracy on images held out of the training split (never the test
    split); the recorded lr trace is the controller's answer to the recorded accuracies."""
    data = subset(digits, 100, 40)
    seen = []
    real_evaluate = train_mod.evaluate

    def spy(model, images, labels, *a, **kw):
        seen.append(len(images))
        return real_evaluate(model, images, labels, *a, **kw)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    cfg = TrainConfig(width=4, epochs=3, batch_size=32, lr_schedule="accelat", accelat_k=1,
                      accelat_patience=0, accelat_threshold=2.0, accelat_factor=0.5,
                      val_fraction=0.2, robust_eval_samples=0)
    _, card = train(cfg, dataset=data)
    rec = card.lr_schedule
    assert rec["name"] == "accelat" and len(rec["val_trace"]) == 3
    assert 20 in seen and 40 in seen  # 20 held-out validation images, 40 test images
    # threshold 2 > any rise: a cut after every epoch once more than k=1 earlier means exist
    assert rec["lr_trace"] == pytest.approx([0.05, 0.05, 0.05])
    assert rec["options"]["changes_after_epochs"] == [3]
    replay = run_controller(rec["val_trace"], k=1, patience=0, threshold=2.0, factor=0.5,
                            floor=1e-6, lr=0.05)
    assert replay == pytest.approx([0.05, 0.05, 0.025])
    assert rec["options"]["watches"] == "clean validation accuracy"


def test_val_split_is_held_out_of_training(digits):
    cfg = TrainConfig(val_fraction=0.25)
    data = subset(digits, 80)
    x_tr, y_tr, x_val, y_val = train_mod._split(data, cfg)
    assert len(x_val) == 20 and len(x_tr) == 60
    flat = {a.tobytes() for a in x_tr}
    assert not any(a.tobytes() in flat for a in x_val)
    assert TrainConfig(lr_schedule="accelat").effective_val_fraction == 0.1
    assert TrainConfig().effective_val_fraction == 0.0


# --- catastrophic-overfitting guard ------------------------------------------------------------

def test_overfitting_guard_stops_and_restores_previous_weights(digits, monkeypatch):
    """Scripted check accuracies 0.5, 0.6, 0.3: epoch 3 drops by 0.3 > 0.2, so training stops,
    epoch 2's weights come back, and the card says 2 epochs ran of the 5 requested."""
    data = subset(digits, 64, 30)
    scripted = iter([0.5, 0.6, 0.3, 0.9, 0.9])
    snapshots = {}
    calls = []

    def fake_robust(model, x, y, eps, steps, seed, precision="fp32", batch_size=256):
        calls.append(len(x))
        snapshots[len(calls)] = copy.deepcopy(model.state_dict())
        return next(scripted)

    reports: list[EpochReport] = []
    kept = {}

    def on_epoch(r):
        reports.append(r)
        kept[r.epoch] = copy.deepcopy(r.model.state_dict())

    monkeypatch.setattr(train_mod, "robust_accuracy", fake_robust)
    cfg = TrainConfig(width=4, epochs=5, batch_size=32, adversarial="fgsm-rs", eps=0.1,
                      robust_eval_samples=0)
    model, card = train(cfg, dataset=data, on_epoch=on_epoch)
    assert calls == [32, 32, 32]  # one fixed minibatch per epoch, three epochs
    assert [r.epoch for r in reports] == [1, 2]
    assert card.stopped_early and card.epochs_run == 2 and card.epochs_requested == 5
    assert "epoch 3" in card.stop_reason and "0.600 to 0.300" in card.stop_reason
    assert "restored the weights of epoch 2" in card.stop_reason
    assert card.adversarial["overfit_guard"]["trace"] == [0.5, 0.6, 0.3]
    restored = model.state_dict()
    assert all(torch.equal(restored[k], kept[2][k]) for k in restored)
    collapsed = snapshots[3]  # the weights epoch 3 produced, thrown away
    assert not all(torch.equal(restored[k], collapsed[k]) for k in restored)


def test_overfitting_guard_is_quiet_without_collapse(digits, monkeypatch):
    data = subset(digits, 64, 30)
    scripted = iter([0.5, 0.35, 0.2])  # drops of 0.15: within 0.2

    monkeypatch.setattr(train_mod, "robust_accuracy", lambda *a, **kw: next(scripted))
    _, card = train(TrainConfig(width=4, epochs=3, batch_size=32, adversarial="pgd", steps=2,
                                robust_eval_samples=0), dataset=data)
    assert not card.stopped_early and card.stop_reason is None and card.epochs_run == 3


# --- adversarial training works -------------------------------------------------------------

def test_adversarial_training_raises_pgd_robust_accuracy(digits):
    """Same model, data and budget (resnet8 w8, 3 epochs, batch 32, digits): FGSM-RS at eps 0.1
    against standard training, PGD-10 at eps 0.1 on 200 test images. Standard training gives
    ~0% robust accuracy; FGSM-RS ~30%."""
    data = subset(digits, len(digits.x_train), 200)
    base = dict(width=8, epochs=3, batch_size=32, eps=0.1, robust_eval_samples=200)
    _, std = train(TrainConfig(**base), dataset=data)
    _, adv = train(TrainConfig(**base, adversarial="fgsm-rs"), dataset=data)
    assert std.robust_eval["steps"] == 10 and std.robust_eval["eps"] == 0.1
    assert adv.adversarial == {**adv.adversarial, "method": "fgsm-rs", "eps": 0.1, "steps": 1,
                               "alpha": pytest.approx(0.125)}
    assert adv.robust_accuracy >= std.robust_accuracy + 0.15, (adv.robust_accuracy,
                                                              std.robust_accuracy)
    assert adv.accuracy > 0.4 and std.accuracy > 0.9


def test_pgd_stays_in_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    adv = train_mod.pgd(model, x, y, eps=0.05, alpha=0.02, steps=5,
                        generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.05 + 1e-7 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)


def test_training_attacks_pass_gradients_through_squeeze():
    """Rounding has a zero gradient: without BPDA a PGD step from x would not move at all."""
    torch.manual_seed(0)
    model = nn.Sequential(Squeeze(3), nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    adv = train_mod.pgd(model, x, y, eps=0.1, alpha=0.1, steps=1, random_start=False)
    assert (adv - x).abs().amax(dim=(1, 2, 3)).min() > 0.05  # every image moved
    x.requires_grad_(True)
    nn.functional.cross_entropy(model(x), y).backward()
    assert float(x.grad.abs().max()) == 0.0  # the layer itself stays non-differentiable


# --- defences: layers, card round trip, ONNX export ------------------------------------------

def test_squeeze_and_output_noise_layers():
    sq = Squeeze(2)
    x = torch.tensor([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])
    assert sq(x).tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1, 1])
    with pytest.raises(EdgerobError):
        Squeeze(0)
    noise = OutputNoise(0.5, seed=3, num_classes=4).eval()
    z = torch.zeros(OUTPUT_NOISE_ROWS + 3, 4)
    out = noise(z)
    assert torch.equal(out[:3], out[OUTPUT_NOISE_ROWS:])  # the pattern repeats every 256 rows
    assert torch.equal(out, OutputNoise(0.5, seed=3, num_classes=4).eval()(z))  # seeded
    assert not torch.equal(out, OutputNoise(0.5, seed=4, num_classes=4).eval()(z))
    assert 0.4 < float(noise.noise.std()) < 0.6
    assert torch.equal(noise.train()(z), z)  # inference only


@pytest.mark.parametrize("defence", [{"squeeze_bits": 3}, {"output_noise": 0.5}])
def test_defences_export_to_onnx_with_matching_outputs(digits, tmp_path, defence):
    """A trained model with the defence, saved, rebuilt from its card, exported by
    edgerob.host.export (fp32 and fp16; int8 parity is not checked: with few epochs the tiny model's
    int8 agreement can fall under 95% whatever the defence), and the fp32 ONNX logits equal torch's
    for batches of 1, 7 and 300 (over the noise pattern's 256 rows)."""
    import onnxruntime as ort

    from edgerob.host.export import export

    data = subset(digits, 600, 60)
    folder = tmp_path / "m"
    model, card = train(TrainConfig(width=8, epochs=3, batch_size=32, robust_eval_samples=0,
                                    **defence), folder, dataset=data)
    loaded, loaded_card = load_checkpoint(folder)
    assert loaded_card.defences == card.defences and card.defences
    key = next(iter(defence))
    if key == "squeeze_bits":
        assert isinstance(loaded.squeeze, Squeeze) and loaded.squeeze.bits == 3
    else:
        assert isinstance(loaded.output_noise, OutputNoise)
        assert card.defences["output_noise"]["seed"] == 0
        assert "output_noise.noise" in loaded.state_dict()
    x = torch.from_numpy(digits.x_test[:300])
    with torch.no_grad():
        ref = model(x).numpy()
        assert np.array_equal(loaded(x).numpy(), ref)
    arts = export(folder, precisions=("fp32", "fp16"))
    assert arts["fp32"].parity["top1_agreement"] == 1.0
    assert arts["fp16"].parity["top1_agreement"] >= 0.98
    sess = ort.InferenceSession(arts["fp32"].path, providers=["CPUExecutionProvider"])
    for n in (1, 7, 300):
        got = sess.run(None, {"input": digits.x_test[:n]})[0]
        np.testing.assert_allclose(got, ref[:n], rtol=0, atol=1e-4)
    # the defence is really in the graph: the same weights without it give other outputs
    plain = build_model(dataclasses.replace(card, defences={}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("output_noise")})
    with torch.no_grad():
        assert np.abs(plain.eval()(x).numpy() - ref).max() > 1e-2


def test_undefended_model_has_no_defence_layers():
    from edgerob.host.models import ResNet

    m = ResNet(8, 4, 1, 10, 16, [0.3], [0.4])
    assert m.squeeze is None and m.output_noise is None
    assert not any(k.startswith(("squeeze", "output_noise")) for k in m.state_dict())


def test_defended_init_equals_plain_init():
    """Defence layers draw nothing from the global generator: same seed, same weights."""
    from edgerob.host.models import ResNet

    torch.manual_seed(5)
    a = ResNet(8, 4, 1, 10, 16, [0.3], [0.4])
    torch.manual_seed(5)
    b = ResNet(8, 4, 1, 10, 16, [0.3], [0.4], squeeze_bits=4, output_noise=1.0)
    sb = b.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_train_noise_is_recorded_but_not_a_layer(digits):
    data = subset(digits, 64, 30)
    m, card = train(TrainConfig(width=4, epochs=1, batch_size=32, train_noise=0.2,
                                robust_eval_samples=0), dataset=data)
    plain_model, _ = train(TrainConfig(width=4, epochs=1, batch_size=32,
                                       robust_eval_samples=0), dataset=data)
    assert card.defences == {"train_noise": 0.2}
    assert m.squeeze is None and m.output_noise is None
    assert not same_weights(m, plain_model)  # the noise did change what was learned


def test_energy_from_a_profiler_sums_the_training_windows(digits, monkeypatch):
    import edgerob.device.profilers as profilers

    windows = []

    class FakeProfiler:
        @classmethod
        def available(cls):
            return True, ""

        def start(self):
            windows.append("open")

        def stop(self):
            windows.append("closed")
            return profilers.PowerTrace(energy_j=1.5, duration_s=1.0)

    monkeypatch.setattr(train_mod, "profiler_class", lambda name: FakeProfiler)
    data = subset(digits, 64, 30)
    _, card = train(TrainConfig(width=4, epochs=2, batch_size=32, robust_eval_samples=0,
                                energy_profiler="fake"), dataset=data)
    assert windows == ["open", "closed"] * 2 and card.energy_j == 3.0
    assert "fake" in card.energy_note


# --- precision --------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp64", "bf16", "fp16"])
def test_precisions_train_and_store_fp32(digits, tmp_path, precision):
    data = subset(digits, 96, 40)
    model, card = train(TrainConfig(width=4, epochs=1, batch_size=32, precision=precision,
                                    adversarial="fgsm-rs", robust_eval_samples=20),
                        tmp_path / precision, dataset=data)
    assert card.precision["train"] == precision and card.precision["stored"] == "fp32"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(card.precision["eval_accuracy"]) and card.epochs_run == 1
    loaded, _ = load_checkpoint(tmp_path / precision)
    assert same_weights(loaded, model)


def test_fp64_differs_from_fp32_but_only_slightly(digits):
    data = subset(digits, 96, 40)
    base = dict(width=4, epochs=1, batch_size=32, robust_eval_samples=0)
    m32, _ = train(TrainConfig(**base), dataset=data)
    m64, _ = train(TrainConfig(**base, precision="fp64"), dataset=data)
    w32, w64 = m32.fc.weight, m64.fc.weight
    assert not torch.equal(w32, w64) and torch.allclose(w32, w64, atol=1e-3)


# --- defaults unchanged -------------------------------------------------------------------------

def legacy_train(config: TrainConfig, data):
    """The training loop as it was before adversarial training and schedules were added."""
    from edgerob.host.models import ModelCard, default_width

    card = ModelCard(arch=config.arch, depth=8, width=config.width or default_width(8),
                     in_channels=1, num_classes=10, input_shape=list(data.input_shape),
                     dataset=data.name, mean=data.mean, std=data.std)
    torch.manual_seed(config.seed)
    model = build_model(card)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps = -(-len(data.x_train) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * steps)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for _ in range(config.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x_all[idx]), y_all[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def test_default_config_trains_exactly_as_before(digits):
    data = subset(digits, 200, 40)
    m, card = train(TrainConfig(width=4, epochs=2), dataset=data)
    assert same_weights(m, legacy_train(TrainConfig(width=4, epochs=2), data))
    explicit = TrainConfig(
        width=4, epochs=2, adversarial=None, eps=0.1, steps=7, alpha=None, lr_schedule="cosine",
        train_noise=0.0, output_noise=0.0, squeeze_bits=None, precision="fp32",
        val_fraction=None, robust_eval_samples=0)
    m2, card2 = train(explicit, dataset=data)
    assert same_weights(m, m2)
    assert card.defences == {} and card.adversarial is None and not card.stopped_early
    assert card.epochs_run == 2 and card.robust_eval["samples"] == 40
    assert card.robust_accuracy is not None and card.energy_j is None and card.energy_note


# --- validation and the CLI -----------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    ({"adversarial": "trades"}, "unknown adversarial"),
    ({"adversarial": "pgd", "eps": 0.0}, "eps > 0"),
    ({"eps": 1.5}, "eps must be in"),
    ({"lr_schedule": "linear"}, "unknown lr schedule"),
    ({"precision": "fp8"}, "unknown precision"),
    ({"squeeze_bits": 0}, "squeeze_bits"),
    ({"output_noise": -1.0}, "output_noise"),
    ({"lr_schedule": "accelat", "val_fraction": 0.0}, "val_fraction must be above 0"),
    ({"accelat_factor": 1.5}, "accelat_factor"),
    ({"steps": 0}, "steps must be a positive integer"),
])
def test_bad_config_is_a_user_error(kw, match):
    with pytest.raises(EdgerobError, match=match):
        TrainConfig(**kw).validate()


@pytest.mark.parametrize("args,match", [
    (["--adversarial", "trades"], "unknown adversarial"),
    (["--lr-schedule", "linear"], "unknown lr schedule"),
    (["--precision", "fp8"], "unknown precision"),
    (["--squeeze-bits", "40"], "squeeze_bits"),
    (["--accelat-k", "0"], "accelat_k"),
])
def test_cli_train_bad_values_exit_2(tmp_path, args, match):
    from edgerob.cli import app

    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "m"), *args])
    assert r.exit_code == 2
    assert match in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m").exists()


def test_cli_train_with_new_options(tmp_path):
    from edgerob.cli import app

    out = tmp_path / "m"
    r = CliRunner().invoke(app, [
        "train", "--out", str(out), "--width", "4", "--epochs", "2", "--adversarial", "fgsm-rs",
        "--eps", "0.05", "--lr-schedule", "accelat", "--accelat-k", "1", "--accelat-patience",
        "0", "--accelat-threshold", "0.5", "--accelat-factor", "0.5", "--lr-floor", "0.001",
        "--squeeze-bits", "4", "--output-noise", "0.1", "--train-noise", "0.05",
        "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    assert "robust accuracy" in r.output and "after 2 epochs," in r.output
    card = json.loads((out / "model.json").read_text())
    assert card["train"]["adversarial"] == "fgsm-rs" and card["adversarial"]["eps"] == 0.05
    assert card["lr_schedule"]["name"] == "accelat" and len(card["lr_schedule"]["lr_trace"]) == 2
    assert card["defences"]["squeeze_bits"] == 4
    assert card["defences"]["output_noise"]["sigma"] == 0.1
    assert card["precision"]["train"] == "bf16" and card["robust_eval"]["bpda"] is True
    load_checkpoint(out)
