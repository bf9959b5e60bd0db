"""One config loader for every aislecast process: a TOML file into msgspec Structs.

A config is a tree of :class:`msgspec.Struct` classes declared with
``forbid_unknown_fields=True``; each constraint is a :class:`msgspec.Meta` on the
field's type (``ge``/``le``, ``pattern``, ``min_length``...) and its ``description``
says what the value means. :func:`load_toml` reads the file and :func:`decode` checks
the data; both raise :class:`~aislecast.kernel.errors.ConfigError` carrying the file,
the dotted field (``broker.port``, ``nfc.tags."T 17".zone``), the problem and the fix,
on one line.

How a failure is located: msgspec 0.18-0.23 gives a :class:`msgspec.ValidationError`
whose only data is its message (``Expected `int` <= 65535 - at `$.broker.port```);
it has no path attribute, and the path it prints hides dict keys as ``[...]``. Rather
than parse that text, a failed decode walks the data beside the schema (the raw field
types from :func:`msgspec.structs.fields`) and converts each value with its own field
type: the first value msgspec refuses is the field to name, and
:func:`msgspec.inspect.type_info` of that field's type gives the allowed range or
values for the fix. The happy path is one plain ``msgspec.convert``.

    cfg = load_toml("gateway.toml", GatewayConfig, create_hint="aislecast gateway init")
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar, get_args, get_origin

import msgspec
import msgspec.inspect as mi

from aislecast.kernel.errors import ConfigError

__all__ = ["TcpPort", "decode", "dotted", "load_toml", "read_toml"]

S = TypeVar("S", bound=msgspec.Struct)

#: A TCP port to connect to or listen on.
TcpPort = Annotated[int, msgspec.Meta(ge=1, le=65535)]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_SHOWN_MAX: Final = 40  # characters of an offending value quoted back in the message


def load_toml(path: str | os.PathLike[str], schema: type[S], *, create_hint: str) -> S:
    """Read ``path`` and decode it into ``schema``; ``create_hint`` says how to make one."""
    return decode(read_toml(path, create_hint=create_hint), schema, file=str(path))


def read_toml(path: str | os.PathLike[str], *, create_hint: str) -> dict[str, Any]:
    """The TOML table in ``path``; every way of failing is a one-line :class:`ConfigError`."""
    name = str(path)

    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError("", problem, hint=fix, file=name)

    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise fail("does not exist", f"check the path, or write a starter file: {create_hint}") from None
    except IsADirectoryError:
        raise fail("is a directory", "pass the path of the TOML file itself") from None
    except PermissionError:
        raise fail("cannot be read (permission denied)",
                   "run as a user who may read it, or fix its mode (chmod 0640)") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror})", "pass a readable TOML file") from None
    if b"\x00" in raw:
        raise fail("is a binary file, not TOML text", "pass the TOML config file")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise fail(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                   "save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"is not valid TOML: {exc}",
                   'fix that line: strings need quotes, tables are [name], one key = value a line',
                   ) from None


def decode(data: Mapping[str, Any], schema: type[S], *, file: str | None = None) -> S:
    """``data`` as a ``schema``; a refusal names the dotted field and the fix."""
    try:
        return msgspec.convert(data, schema)
    except msgspec.ValidationError as exc:
        found = _locate(data, schema, (), schema)
        if found is None:  # the walk covers every type we use; keep msgspec's words otherwise
            raise ConfigError("", f"does not fit: {exc}", file=file) from exc
        field, problem, fix = found
        raise ConfigError(field, problem, hint=fix, file=file) from exc


def dotted(path: Sequence[str | int]) -> str:
    """``("nfc", "tags", "T 17", "zone")`` -> ``nfc.tags."T 17".zone``, as TOML spells it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{key}" if out else key
    return out


# -- finding the field msgspec refused -------------------------------------------------

_Found = tuple[str, str, str]  # field, problem, fix
_Path = tuple[str | int, ...]


def _strip(tp: Any) -> Any:
    """The type under ``Annotated[...]``."""
    return get_args(tp)[0] if get_origin(tp) is Annotated else tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _locate(value: Any, tp: Any, path: _Path, root: type[msgspec.Struct]) -> _Found | None:
    """The first field under ``path`` whose value ``tp`` refuses, or None if it fits;
    ``root`` is the whole schema (to say which table a misplaced setting belongs in)."""
    base = _strip(tp)
    if _is_struct(base) and isinstance(value, dict):
        found = _locate_struct(value, base, path, root)
    elif get_origin(base) is dict and isinstance(value, dict):
        item = get_args(base)[1]
        found = next((f for k, v in value.items()
                      if (f := _locate(v, item, (*path, str(k)), root))), None)
    elif get_origin(base) is list and isinstance(value, list):
        item = get_args(base)[0]
        found = next((f for i, v in enumerate(value)
                      if (f := _locate(v, item, (*path, i), root))), None)
    else:
        found = None
    if found is not None:
        return found
    try:  # the parts fit: does the whole (a leaf, or a container's own Meta)?
        msgspec.convert(value, tp)
    except msgspec.ValidationError:
        return _refused(value, tp, path)
    return None


def _locate_struct(value: dict[str, Any], cls: type[msgspec.Struct], path: _Path,
                   root: type[msgspec.Struct]) -> _Found | None:
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    for key in value:
        if key not in fields:
            return _unknown(str(key), sorted(fields), path, root)
    for name, info in fields.items():
        if name in value:
            if (found := _locate(value[name], info.type, (*path, name), root)) is not None:
                return found
        elif info.required:
            here = dotted((*path, name))
            desc = _description(mi.type_info(info.type))
            return here, "is required", (f"add it: {desc}" if desc
                                         else f"add {name} = {_expect(mi.type_info(info.type))}")
    return None


def _unknown(key: str, names: list[str], path: _Path, root: type[msgspec.Struct]) -> _Found:
    here = dotted((*path, key))
    table = dotted(path)
    problem = f"is not a setting of [{table}]" if table else "is not a setting aislecast knows"
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    if close:
        return here, problem, "did you mean " + " or ".join(dotted((*path, c)) for c in close) + "?"
    elsewhere = [p for p in _settings(root) if p[-1] == key and p[:-1] != path]
    if elsewhere:
        where = dotted(elsewhere[0][:-1])
        if not where:
            return here, problem, "it belongs at the top of the file, before the first [table]"
        return here, problem, f"it belongs in [{where}]: write it there as {key} = ..."
    return here, problem, f"remove it; the settings here are {', '.join(names)}"


def _settings(cls: type[msgspec.Struct], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every setting's path in a schema, through nested tables (not through dicts)."""
    for f in msgspec.structs.fields(cls):
        here = (*path, f.encode_name)
        yield here
        sub = _strip(f.type)
        if _is_struct(sub):
            yield from _settings(sub, here)


def _refused(value: Any, tp: Any, path: _Path) -> _Found:
    info = mi.type_info(tp)
    core = _core(info)
    here = dotted(path) or "(top level)"
    shown = _show(value)
    expect = f"a table [{dotted(path)}]" if isinstance(core, mi.StructType) else _expect(info)
    if not _same_kind(core, value):
        problem = "is a table" if isinstance(value, dict) else f"{shown} is {_kind_of(value)}"
    elif isinstance(core, mi.LiteralType):
        problem = f"{shown} is not one of the choices"
    elif isinstance(core, mi.IntType | mi.FloatType):
        problem = f"{shown} is out of range"
    else:
        problem = f"{shown} is not allowed"
    desc = _description(info)
    if isinstance(core, mi.StrType) and core.pattern and desc:
        return here, problem, desc  # the rule in words, not the regex
    return here, problem, f"use {expect}" + (f"; {desc}" if desc else "")


# -- describing a type from its msgspec.inspect info ----------------------------------


def _core(t: mi.Type) -> mi.Type:
    """Without Metadata wrappers, and ``X | None`` as ``X`` (TOML has no null)."""
    while isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(rest) == 1:
            return _core(rest[0])
    return t


def _description(t: mi.Type) -> str | None:
    if isinstance(t, mi.UnionType):
        return next((d for x in t.types if (d := _description(x))), None)
    if isinstance(t, mi.Metadata):
        desc = (t.extra_json_schema or {}).get("description")
        return str(desc) if desc else _description(t.type)
    return None


def _bounds(t: mi.IntType | mi.FloatType) -> str:
    if t.ge is not None and t.le is not None:
        return f" from {t.ge} to {t.le}"
    low = f">= {t.ge}" if t.ge is not None else f"> {t.gt}" if t.gt is not None else ""
    high = f"<= {t.le}" if t.le is not None else f"< {t.lt}" if t.lt is not None else ""
    return " " + " and ".join(p for p in (low, high) if p) if low or high else ""


def _lengths(t: mi.StrType | mi.ListType | mi.DictType, unit: str) -> str:
    lo, hi = t.min_length, t.max_length
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" of at least {lo} {unit.removesuffix('s') if lo == 1 else unit}"
    return f" of {lo or 0} to {hi} {unit}"


def _expect(t: mi.Type) -> str:
    """What a value of type ``t`` must be, in words: 'an integer from 1 to 65535'."""
    t = _core(t)
    if isinstance(t, mi.IntType):
        return "an integer" + _bounds(t)
    if isinstance(t, mi.FloatType):
        return "a number" + _bounds(t)
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.StrType):
        pattern = f" matching {t.pattern}" if t.pattern else ""
        return "a string" + _lengths(t, "characters") + pattern
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(_show(v) for v in t.values)
    if isinstance(t, mi.ListType):
        return "a list" + _lengths(t, "items") + f", each {_expect(t.item_type)}"
    if isinstance(t, mi.DictType):
        return "a table" + f", each value {_expect(t.value_type)}"
    if isinstance(t, mi.StructType):
        return "a table"
    if isinstance(t, mi.UnionType):
        return " or ".join(_expect(x) for x in t.types if not isinstance(x, mi.NoneType))
    return f"a {type(t).__name__.removesuffix('Type').lower()}"


def _same_kind(t: mi.Type, value: Any) -> bool:
    """Whether ``value`` is the right sort of thing, so only a constraint refused it."""
    if isinstance(value, bool):
        return isinstance(t, mi.BoolType) or (
            isinstance(t, mi.LiteralType) and any(isinstance(v, bool) for v in t.values))
    kinds: dict[type[mi.Type], tuple[type, ...]] = {
        mi.IntType: (int,), mi.FloatType: (int, float), mi.StrType: (str,), mi.ListType: (list,),
        mi.DictType: (dict,), mi.StructType: (dict,),
    }
    if isinstance(t, mi.LiteralType):
        return any(type(v) is type(value) for v in t.values)
    if isinstance(t, mi.UnionType):
        return any(_same_kind(_core(x), value) for x in t.types)
    return isinstance(value, kinds.get(type(t), ()))


def _kind_of(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return next((n for k, n in names.items() if isinstance(value, k)),
                f"a TOML {type(value).__name__}")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."
