"""Artifacts as a device reads them: one deployable file at one precision, plus its metadata.

`edgerob.host.export` writes them (PRECISION.onnx + PRECISION.json); reading one needs only json,
so a device never imports torch or onnx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgerob.errors import EdgerobError
from edgerob.files import file_sha256

PRECISIONS = ("fp32", "fp16", "int8")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass
class Artifact:
    path: str
    precision: str
    sha256: str
    model: str
    checkpoint_sha256: str
    input_shape: list[int]  # C, H, W; the batch axis is dynamic
    opset: int
    exporter: str
    parity: dict = field(default_factory=dict)
    calibration: dict | None = None
    size_bytes: int = 0
    created_at: str = ""
    versions: dict = field(default_factory=dict)
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    model_dir: str | None = None  # the checkpoint folder, relative to the artifact's folder

    def checkpoint_dir(self) -> Path | None:
        """The model folder this artifact came from (the torch runtime runs it), if known."""
        if self.model_dir is None:
            return None
        return (Path(self.path).parent / self.model_dir).resolve()


def metadata_path(onnx_path: str | Path) -> Path:
    return Path(onnx_path).with_suffix(".json")


def load_artifact(onnx_path: str | Path, verify: bool = True) -> Artifact:
    """Read an artifact's metadata; with `verify`, check the file still has its recorded hash."""
    onnx_path = Path(onnx_path)
    meta = metadata_path(onnx_path)
    if not onnx_path.is_file():
        raise EdgerobError(f"artifact {onnx_path} does not exist")
    if not meta.is_file():
        raise EdgerobError(f"artifact {onnx_path} has no metadata file {meta.name}")
    try:
        art = Artifact(**json.loads(meta.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise EdgerobError(f"{meta} is not valid artifact metadata: {e}") from None
    art.path = str(onnx_path)
    if verify and file_sha256(onnx_path) != art.sha256:
        raise EdgerobError(f"{onnx_path} does not match the sha256 in {meta.name}: "
                           f"corrupt or replaced; export it again")
    return art


def find_artifacts(directory: str | Path, precisions=PRECISIONS) -> dict[str, Artifact]:
    """The verified artifacts present in `directory`, by precision."""
    found = {}
    for p in precisions:
        path = Path(directory) / f"{p}.onnx"
        if path.is_file():
            found[p] = load_artifact(path)
    return found
