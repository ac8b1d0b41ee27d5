"""ResNets of any depth and width, their checkpoints and their JSON cards.

Two families:
- CIFAR-style (He et al. 2016, section 4.2): depth 6n+2 (8, 14, 20, 32, 56, 110, ...), three stages
  of n basic blocks at width w, 2w, 4w;
- ImageNet-style: 18 and 34 (basic blocks) and 50 (bottlenecks), four stages at w, 2w, 4w, 8w;
  inputs smaller than 64 px get a 3x3 stride-1 stem without max-pool so 16-32 px images survive.

Normalisation by the dataset's mean/std is the model's first layer, so every model (and every
exported artifact) takes images in [0, 1]: attacks and eps-balls are defined there.

Defences that are part of the model (they are in every exported artifact too), recorded in the
card's `defences` and rebuilt by `build_model`:
- `Squeeze(bits)`: feature squeezing (Xu et al., NDSS 2018), the [0, 1] input rounded to 2^bits
  levels, before normalisation. Its gradient is zero, as in the deployed model; it is flagged
  `non_differentiable`, so `edgerob.host.attacks.bpda` (and edgerob's adversarial training) pass
  gradients straight through it.
- `OutputNoise(sigma, seed, classes)`: seeded Gaussian noise added to the logits in eval mode
  (inference) only. A graph cannot draw fresh random numbers reproducibly, so the noise is a fixed
  pattern of `OUTPUT_NOISE_ROWS` x classes values drawn once from N(0, sigma^2) with the seed and
  stored as a buffer; row i of a batch gets pattern row i mod `OUTPUT_NOISE_ROWS`. The noise thus
  depends on a sample's position in its batch (not on the image) and repeats every 256 rows: torch
  and ONNX give identical logits for the same batch, and any split of a set into batches of a
  multiple of 256 (export's parity check, `train.evaluate`) gives each sample the same noise.
  It does not change input gradients (an additive term), so it cannot mask an attack; an attacker
  who knows the seed can subtract it.
Gaussian noise on training inputs (`TrainConfig.train_noise`) is a training choice, not a layer.

A checkpoint is a folder: `model.pt` (a plain state_dict, loaded with `weights_only=True`) and
`model.json` (the card) whose `checkpoint_sha256` catches a corrupt or swapped weights file.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes, atomic_write_json, file_sha256

CIFAR_DEPTHS = (8, 14, 20, 32, 56, 110)
IMAGENET_LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                   50: ("bottleneck", (3, 4, 6, 3))}
WEIGHTS_FILE = "model.pt"
CARD_FILE = "model.json"
OUTPUT_NOISE_ROWS = 256  # period of the output-noise pattern (a divisor of export's 256-row chunks)
MAX_SQUEEZE_BITS = 16


@dataclass
class ModelCard:
    """What a checkpoint is and how it was made; written beside the weights as model.json."""

    arch: str  # e.g. "resnet8"
    depth: int
    width: int
    in_channels: int
    num_classes: int
    input_shape: list[int]  # C, H, W
    dataset: str
    mean: list[float]
    std: list[float]
    class_names: list[str] = field(default_factory=list)
    dataset_root: str | None = None
    accuracy: float | None = None  # test top-1 of the fp32 torch model
    epochs_requested: int | None = None
    epochs_run: int | None = None
    train_time_s: float | None = None
    train: dict = field(default_factory=dict)  # optimiser, lr, batch size, seed ...
    parameters: int | None = None
    checkpoint_sha256: str | None = None
    torch_version: str | None = None
    created_at: str | None = None
    # How training went (edgerob.host.train fills these; None where not recorded):
    defences: dict = field(default_factory=dict)  # {"squeeze_bits": B, "output_noise": {...},
    #   "train_noise": sigma}; build_model rebuilds the first two (the third is not a layer)
    precision: dict | None = None  # training/evaluation precision and the accuracy in it
    adversarial: dict | None = None  # method, eps, steps, alpha; overfitting-guard trace
    lr_schedule: dict | None = None  # name, options, per-epoch lr trace, validation trace
    robust_accuracy: float | None = None  # PGD on the test split at the training eps (fp32)
    robust_eval: dict | None = None  # how robust_accuracy was measured
    stopped_early: bool = False
    stop_reason: str | None = None
    energy_j: float | None = None  # training energy, where a profiler could measure it
    energy_note: str | None = None
    n_train_samples: int | None = None  # samples trained on (the TRASH score's denominator)

    @property
    def name(self) -> str:
        return f"{self.arch}-w{self.width}-{self.dataset}"


def parse_arch(arch: str) -> int:
    """'resnet20' -> 20, checking the depth is one the family supports."""
    suffix = arch.lower().removeprefix("resnet")
    depth = int(suffix) if suffix.isdigit() else -1
    if not arch.lower().startswith("resnet") or not (
            depth in IMAGENET_LAYERS or (depth >= 8 and (depth - 2) % 6 == 0)):
        raise EdgerobError(f"unknown architecture {arch!r}: use resnet<6n+2> "
                           f"(e.g. {', '.join(f'resnet{d}' for d in CIFAR_DEPTHS)}) "
                           f"or resnet18/34/50")
    return depth


def default_width(depth: int) -> int:
    return 64 if depth in IMAGENET_LAYERS else 16


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Squeeze(nn.Module):
    """Feature squeezing: x -> round(x * (2^bits - 1)) / (2^bits - 1) for inputs in [0, 1].

    The forward is the real rounding (zero gradient, as deployed); `non_differentiable` lets
    `edgerob.host.attacks.bpda` make it straight-through for gradient attacks."""

    non_differentiable = True

    def __init__(self, bits: int):
        super().__init__()
        bits = _check_squeeze_bits(bits)
        self.bits = bits
        self.levels = float(2 ** bits - 1)

    def forward(self, x):
        return torch.round(x * self.levels) / self.levels

    def extra_repr(self):
        return f"bits={self.bits}"


class OutputNoise(nn.Module):
    """Seeded Gaussian noise on logits at inference (eval mode); identity in training mode.

    `noise` is a (rows, classes) buffer drawn once from N(0, sigma^2) with `torch.Generator`
    seeded by `seed`; batch row i gets `noise[i mod rows]`. Deterministic, so the same batch
    gives the same logits in torch and in the exported ONNX graph (Range, Mod, Gather, Add)."""

    # a sample's output depends on its row in the batch: `edgerob.host.attacks` keeps rows fixed
    position_dependent = True

    def __init__(self, sigma: float, seed: int, num_classes: int, rows: int = OUTPUT_NOISE_ROWS):
        super().__init__()
        sigma = float(sigma)
        if not (sigma > 0 and sigma < float("inf")):
            raise EdgerobError(f"output noise sigma must be a positive number, got {sigma!r}")
        if rows < 1 or num_classes < 1:
            raise EdgerobError("output noise needs at least one row and one class")
        self.sigma, self.seed = sigma, int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.register_buffer("noise", torch.randn(rows, num_classes, generator=g) * sigma)

    def forward(self, z):
        if self.training:
            return z
        rows = torch.arange(z.shape[0], device=z.device) % self.noise.shape[0]
        return z + self.noise.index_select(0, rows)

    def extra_repr(self):
        return f"sigma={self.sigma:g}, seed={self.seed}, rows={self.noise.shape[0]}"


def _check_squeeze_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_SQUEEZE_BITS:
        raise EdgerobError(f"squeeze bits must be an integer from 1 to {MAX_SQUEEZE_BITS}, "
                           f"got {bits!r}")
    return bits


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(cin, cout, stride) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """`squeeze_bits` / `output_noise` (sigma) add the defence layers `squeeze` (before
    `normalize`) and `output_noise` (after `fc`); without them the model, its state_dict and its
    initial weights for a given torch seed are exactly those of the plain ResNet."""

    def __init__(self, depth: int, width: int, in_channels: int, num_classes: int,
                 image_size: int, mean, std, squeeze_bits: int | None = None,
                 output_noise: float = 0.0, output_noise_seed: int = 0):
        super().__init__()
        self.squeeze = Squeeze(squeeze_bits) if squeeze_bits else None
        self.normalize = Normalize(mean, std)
        if depth in IMAGENET_LAYERS:
            kind, counts = IMAGENET_LAYERS[depth]
            block = Bottleneck if kind == "bottleneck" else BasicBlock
            widths, strides = [width * 2**i for i in range(4)], (1, 2, 2, 2)
            if image_size >= 64:
                self.stem = nn.Sequential(
                    nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            else:
                self.stem = _small_stem(in_channels, width)
        else:
            n = (depth - 2) // 6
            block, counts = BasicBlock, (n, n, n)
            widths, strides = [width, 2 * width, 4 * width], (1, 2, 2)
            self.stem = _small_stem(in_channels, width)
        layers, cin = [], width
        for planes, count, stride in zip(widths, counts, strides):
            for i in range(count):
                layers.append(block(cin, planes, stride if i == 0 else 1))
                cin = planes * block.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # its own generator: the global RNG (and so the weights above) are left as they were
        self.output_noise = (OutputNoise(output_noise, output_noise_seed, num_classes)
                             if output_noise else None)

    def forward(self, x):
        if self.squeeze is not None:
            x = self.squeeze(x)
        x = self.layers(self.stem(self.normalize(x)))
        x = self.fc(torch.flatten(self.pool(x), 1))
        if self.output_noise is not None:
            x = self.output_noise(x)
        return x


def _small_stem(cin, width):
    return nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True))


def build_model(card: ModelCard) -> ResNet:
    """The card's architecture with the defence layers its `defences` name."""
    c, h, _ = card.input_shape
    return ResNet(card.depth, card.width, c, card.num_classes, h, card.mean, card.std,
                  **defence_kwargs(card.defences))


def defence_kwargs(defences: dict | None) -> dict:
    """ResNet keyword arguments for a card's `defences` (unknown keys are an error)."""
    defences = defences or {}
    unknown = set(defences) - {"squeeze_bits", "output_noise", "train_noise"}
    if unknown:
        raise EdgerobError(f"unknown defence {sorted(unknown)[0]!r} in model card; this edgerob "
                           f"knows squeeze_bits, output_noise and train_noise")
    kw = {}
    if defences.get("squeeze_bits"):
        kw["squeeze_bits"] = _check_squeeze_bits(defences["squeeze_bits"])
    noise = defences.get("output_noise")
    if noise:
        if not isinstance(noise, dict) or "sigma" not in noise:
            raise EdgerobError(f"output_noise in a model card must be {{sigma, seed}}, "
                               f"got {noise!r}")
        if noise.get("rows", OUTPUT_NOISE_ROWS) != OUTPUT_NOISE_ROWS:
            raise EdgerobError(f"output noise with {noise['rows']} rows is not supported "
                               f"(this edgerob uses {OUTPUT_NOISE_ROWS})")
        kw["output_noise"] = float(noise["sigma"])
        kw["output_noise_seed"] = int(noise.get("seed", 0))
    return kw


def save_checkpoint(model: nn.Module, card: ModelCard, directory: str | Path) -> Path:
    directory = Path(directory)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(directory / WEIGHTS_FILE, buf.getvalue())
    card.checkpoint_sha256 = file_sha256(directory / WEIGHTS_FILE)
    card.parameters = sum(p.numel() for p in model.parameters())
    card.torch_version = torch.__version__
    atomic_write_json(directory / CARD_FILE, asdict(card))
    return directory


def load_card(directory: str | Path) -> ModelCard:
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise EdgerobError(f"{directory} is not a model folder: no {CARD_FILE}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ModelCard(**raw)
    except (ValueError, TypeError) as e:  # ValueError covers bad JSON and bad UTF-8
        raise EdgerobError(f"{path} is not a valid model card: {e}") from None


def load_checkpoint(directory: str | Path) -> tuple[ResNet, ModelCard]:
    """Load weights safely (`weights_only=True`) after checking them against the card's hash."""
    directory = Path(directory)
    card = load_card(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise EdgerobError(f"{directory} has a card but no {WEIGHTS_FILE}")
    if card.checkpoint_sha256 and file_sha256(weights) != card.checkpoint_sha256:
        raise EdgerobError(f"{weights} does not match the sha256 in {CARD_FILE}: "
                           f"corrupt or replaced")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model = build_model(card)
        model.load_state_dict(state)
    except Exception as e:  # unpickling or shape errors: the file is not this model
        raise EdgerobError(f"cannot load {weights}: {str(e).splitlines()[0]}") from None
    return model.eval(), card
