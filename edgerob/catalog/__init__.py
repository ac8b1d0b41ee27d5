"""Finding and validating the YAML files a user edits: targets/NAME.yaml and profiles/NAME.yaml.

A name is looked up in ./targets (or ./profiles) first, so a user can override or add entries in
their working directory, then in the catalog shipped with edgerob. A path to a .yaml file is used
as it is. Validation errors name the file, the field and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgerob.errors import EdgerobError

M = TypeVar("M", bound=BaseModel)
_PACKAGE = Path(__file__).resolve().parents[1]  # edgerob/


def catalog_dirs(kind: str) -> list[Path]:
    """Where `kind` ("targets" or "profiles") YAML files are searched, in order."""
    dirs = [Path.cwd() / kind, _PACKAGE / "_catalog" / kind, _PACKAGE.parent / kind]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def find_yaml(kind: str, name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise EdgerobError(f"{kind[:-1]} file {path} does not exist")
        return path
    for d in catalog_dirs(kind):
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = list_names(kind)
    raise EdgerobError(f"unknown {kind[:-1]} {name!r}; known: {', '.join(known) or 'none'}")


def list_names(kind: str) -> list[str]:
    return sorted({p.stem for d in catalog_dirs(kind) for p in d.glob("*.yaml")})


def load_yaml(path: Path, model: type[M]) -> M:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise EdgerobError(f"{path}:{where} malformed YAML: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise EdgerobError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise EdgerobError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(raw, dict):
        raise EdgerobError(f"{path}: expected a mapping of fields, found {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise EdgerobError(f"{path}: field '{field}': {err['msg']}{more}") from None
