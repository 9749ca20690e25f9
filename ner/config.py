"""The boundary between a composed Hydra config and the typed dataclasses the code takes.

Hydra reads `trainer.lr=abc` as the string "abc" and `model.bidirectional=maybe` as "maybe", and adds any key a
`+key=value` override names. `checked` turns one config group into its dataclass and refuses, in one line that
names the key, the value and what is allowed, a key the dataclass lacks and a value of the wrong type; each
dataclass's `__post_init__` then checks ranges and choices with `ConfigError` too. Apps build every dataclass first,
so a bad value stops a run before any data is read or an MLflow run is created.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value a user set cannot be used; the message names the key, the value and what is allowed."""


def checked(cls: type[T], node: Mapping, group: str, skip: Iterable[str] = ()) -> T:
    """`cls(**node)` for the config group `group` ("data", "model", ...; "" for top-level keys), minus the
    sub-groups in `skip`, with unknown keys and mistyped values refused as `ConfigError`."""
    skip = set(skip)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    prefix = f"{group}." if group else ""
    unknown = [k for k in node if k not in fields and k not in skip]
    if unknown:
        keys = ", ".join(f"{prefix}{k}" for k in unknown)
        raise ConfigError(f"unknown config key {keys} (known: {', '.join(fields)})")
    values = {}
    for key, value in node.items():
        if key in skip:
            continue
        values[key] = _typed(f"{prefix}{key}", value, hints[key])
    return cls(**values)


def choice(key: str, value: Any, allowed: Iterable[str]) -> None:
    """A `ConfigError` unless `value` is one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


def device(key: str, value: str) -> None:
    """A torch device this installation can use: cpu, or cuda[:N] with a CUDA build and a GPU."""
    import torch

    kind, _, index = str(value).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise ConfigError(f"{key}={value!r} is not a device: use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
        raise ConfigError(f"{key}={value}: this torch {torch.__version__} has {build}; use {key}=cpu")


def _typed(key: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type, or a ConfigError. Ints pass for floats; strings are never converted."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key}=null: a value is required ({_describe(options)})")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is dict or option is dict:
            if isinstance(value, Mapping):
                return dict(value)
        if typing.get_origin(option) is list and isinstance(value, Sequence) and not isinstance(value, str):
            (item,) = typing.get_args(option) or (Any,)
            return [_typed(f"{key}[{i}]", v, item) if item is not Any else v for i, v in enumerate(value)]
    if str in options and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # `tracking.experiment=2024`: Hydra read a name as a number
    raise ConfigError(f"{key}={value!r} is not {_describe(options)}")


def _describe(options: tuple) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(names.get(o, getattr(o, "__name__", str(o))) for o in options)


CONF = Path(__file__).resolve().parents[1] / "conf"


def help_text(app: str) -> str:
    """`--help` for an app: its usage line and every config file it composes, comments and all (Hydra's own help
    prints the composed values without the comments that say what they do). `app` is "train" or "tag". Hydra
    reads the result as a `string.Template`, so `$` is doubled."""
    return _help_text(app).replace("$", "$$")


def _help_text(app: str) -> str:
    if app == "tag":
        usage = "python -m ner.tag model=<URI> input=<file|folder|glob> output=<file|folder/> [key=value ...]"
        return f"{usage}\n\n== conf/tag/tag.yaml ==\n{(CONF / 'tag' / 'tag.yaml').read_text(encoding='utf-8')}"
    parts = ["python -m ner.train [group=option ...] [key=value ...]   (multirun: -m key=a,b)", ""]
    parts.append(f"== conf/train.yaml ==\n{(CONF / 'train.yaml').read_text(encoding='utf-8')}")
    listed = _yaml(CONF / "train.yaml")["defaults"]
    defaults = {k: v for item in listed if isinstance(item, dict) for k, v in item.items()}
    for group in ("data", "model", "trainer", "tracking", "experiment", "hparams_search"):
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        plus = "+" if group == "hparams_search" else ""  # not in the defaults list: added with +
        parts.append(f"== {group}: choose with {plus}{group}=<{'|'.join(options)}> ==")
        if group in ("experiment", "hparams_search"):  # presets: list them, they are read only when chosen
            for option in options:
                first = (CONF / group / f"{option}.yaml").read_text(encoding="utf-8").splitlines()[1:2]
                parts.append(f"  {option}: {first[0].lstrip('# ') if first else ''}")
            parts.append("")
            continue
        default = defaults.get(group, options[0])
        parts.append(f"-- conf/{group}/{default}.yaml (the default) --")
        parts.append((CONF / group / f"{default}.yaml").read_text(encoding="utf-8"))
    return "\n".join(parts)


def quiet_mlflow() -> None:
    """What the apps print is what a user needs: MLflow's INFO lines ("Creating initial MLflow database tables")
    and its "Downloading artifacts" bars are left out (a user's own setting of the variable is kept)."""
    import logging
    import os

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path))
