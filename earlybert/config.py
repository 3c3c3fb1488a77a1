"""One config system: dataclasses <-> YAML <-> `key=value` overrides; unknown keys are errors.

Field docstrings (the string literal under each field) become the `--help` text, as in litgpt. A field whose
values have a domain declares it in its annotation, `Annotated[float, Range(0, 1)]`, `Annotated[str,
Choice(...)]` or `Annotated[str, PathKind("file")]`; `check_config` checks every one of them, before a run
folder exists.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from earlybert.errors import EarlyBertError

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (None: unbounded); `open_low`/`open_high` exclude the end itself."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def problem(self, value: float) -> str | None:
        """Why `value` lies outside, or None."""
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        above = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if not (below or above):
            return None
        if self.high is None:
            return f"must be {'>' if self.open_low else '>='} {self.low:g}"
        low = "-inf" if self.low is None else f"{self.low:g}"
        return (f"is outside {'(' if self.open_low else '['}{low}, {self.high:g}{')' if self.open_high else ']'}: "
                "give a value in that range")

    def outside(self) -> float:
        """A value outside the range (for tests)."""
        return self.low - 1 if self.low is not None else self.high + 1


@dataclass(frozen=True)
class Choice:
    """One of `values`."""

    values: tuple

    def problem(self, value: Any) -> str | None:
        """Why `value` is not a choice, or None."""
        return None if value in self.values else f"is unknown: use one of {', '.join(map(str, self.values))}"

    def outside(self) -> str:
        """A value that is no choice (for tests)."""
        return "not-a-choice"


@dataclass(frozen=True)
class PathKind:
    """A path to an existing `kind` ("file" or "folder"); empty (unset) and the `special` words pass."""

    kind: str
    special: tuple = ()

    def problem(self, value: str) -> str | None:
        """Why `value` is not such a path, or None."""
        if value in ("", *self.special):
            return None
        path = packaged_path(value)
        if not path.exists():
            return f"does not exist: give an existing {self.kind}"
        actual = "folder" if path.is_dir() else "file" if path.is_file() else "special file"
        return None if actual == self.kind else f"is a {actual}, not a {self.kind}: give a {self.kind}"


def packaged_path(path: str | os.PathLike) -> Path:
    """`path` as given, or the copy shipped in the wheel when a `configs/...` path is not found from here."""
    path = Path(path).expanduser()
    if not path.exists() and path.parts[:1] == ("configs",):
        from importlib.resources import files

        packaged = Path(str(files("earlybert"))) / path
        return packaged if packaged.exists() else path
    return path


def domains(cls: type) -> dict[str, Range | Choice | PathKind]:
    """The declared domain of each field of a config dataclass that has one."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name: extra for name, tp in hints.items() if typing.get_origin(tp) is typing.Annotated
            for extra in typing.get_args(tp)[1:] if isinstance(extra, (Range, Choice, PathKind))}


def check_config(cfg: Any, paths: bool = True, prefix: str = "") -> None:
    """Check every declared domain in a (nested) config, paths too unless `paths` is False; the first value
    outside its domain raises a one-line error naming the key. `from_dict` checks all but paths as it reads."""
    declared = domains(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_config(value, paths, f"{prefix}{f.name}.")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                check_config(item, paths, f"{prefix}{f.name}[{i}].")
            continue
        domain = declared.get(f.name)
        if domain is not None and (paths or not isinstance(domain, PathKind)):
            _check_value(domain, value, prefix + f.name)


def _check_value(domain: Range | Choice | PathKind, value: Any, key: str) -> None:
    for item in value if isinstance(value, list) else [value]:
        problem = domain.problem(item)
        if problem:
            raise EarlyBertError(f"{key}={item!r} {problem}")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting where YAML is looser (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except EarlyBertError:
                continue
        raise EarlyBertError(f"config key {key} expects {_type_name(tp)}, got {value!r}: give a value of that type")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise EarlyBertError(f"config key {key} expects a list, got {value!r}")
        if _is_dataclass_type(item):
            return [from_dict(item, v, f"{key}[{i}].") for i, v in enumerate(value)]
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise EarlyBertError(f"config key {key} expects a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(value, tp):
        return value
    raise EarlyBertError(f"config key {key} expects {_type_name(tp)}, got {value!r}: give a value of that type")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a (nested) dataclass from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise EarlyBertError(f"config section {prefix.rstrip('.') or '<top>'} must be a mapping, got {data!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EarlyBertError(
            f"unknown config key {prefix}{unknown[0]}: known keys here are {', '.join(sorted(names))}"
        )
    kwargs, declared = {}, domains(cls)
    for name, value in data.items():
        tp = hints[name]
        if _is_dataclass_type(tp):
            kwargs[name] = from_dict(tp, value or {}, f"{prefix}{name}.")
            continue
        kwargs[name] = _coerce(value, tp, prefix + name)
        if name in declared and not isinstance(declared[name], PathKind):  # paths: `check_config`, at the run
            _check_value(declared[name], kwargs[name], prefix + name)
    try:
        return cls(**kwargs)
    except EarlyBertError:
        raise
    except (TypeError, ValueError) as e:
        raise EarlyBertError(f"config section {prefix.rstrip('.') or '<top>'}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (YAML- and JSON-ready)."""
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], parsed value); values are read as YAML (`true`, `3`, `[x, y]`)."""
    if "=" not in text:
        raise EarlyBertError(f"override {text!r} is not key=value: write e.g. train.max_steps=100")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: list[str] = (), prefix: str = "") -> T:
    """Read a YAML file (optional), apply `key=value` overrides, and validate into `cls` (errors name keys with
    `prefix`)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise EarlyBertError(f"config file {path} does not exist: pass --config with a YAML file from configs/")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            line = f" at line {where.line + 1}" if where else ""
            raise EarlyBertError(f"config file {path} is not valid YAML{line}: fix the syntax") from None
        except UnicodeDecodeError:
            raise EarlyBertError(f"config file {path} is not UTF-8 text: save it as UTF-8") from None
        if not isinstance(data, dict):
            raise EarlyBertError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise EarlyBertError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    return from_dict(cls, data, prefix)


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def help_text(cls: type, prefix: str = "") -> list[str]:
    """`key (type, default): doc` lines for every field, nested sections flattened with dots."""
    lines = []
    docs = field_docs(cls)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            lines.extend(help_text(tp, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        lines.append(f"  {prefix}{f.name} ({_type_name(tp)}, default {default!r}): {docs.get(f.name, '')}")
    return lines


def split_cli(argv: list[str], prog: str, cls: type) -> tuple[str | None, list[str]]:
    """(`--config FILE`, key=value overrides) from a command line; `--help` prints `cls`'s keys and exits.

    `--local_rank` (added by the deepspeed launcher) is ignored: the rank comes from the environment.
    """
    argv, path, overrides, i = list(argv), None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(f"usage: {prog} --config FILE [key=value ...]\n\nkeys:")
            print("\n".join(help_text(cls)))
            raise SystemExit(0)
        if arg == "--config":
            if i + 1 >= len(argv):
                raise EarlyBertError("--config needs a YAML file, e.g. --config configs/pretrain/tiny.yaml")
            path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith(("--local_rank", "--local-rank")):
            i += 0 if "=" in arg else 1
        elif arg.startswith("--"):
            raise EarlyBertError(f"unknown flag {arg}: settings are key=value, e.g. train.max_steps=100")
        else:
            overrides.append(arg)
        i += 1
    return path, overrides


def config_from_cli(cls: type[T], argv: list[str], prog: str, prefix: str = "") -> T:
    """`--config FILE` plus key=value overrides -> a validated config; `--help` lists every key."""
    return load_config(cls, *split_cli(argv, prog, cls), prefix=prefix)
