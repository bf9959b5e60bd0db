"""Strict decoding of HTTP request bodies: an unknown field is refused with its name.

The structs HQ takes over HTTP (:class:`~aislecast.kernel.schema.Store`, ``Zone``,
``Beacon``, ``Campaign`` and its parts...) are the same ones that travel over MQTT in
bundles and deltas, where a newer HQ may add a field an older gateway does not know:
there they must stay tolerant (msgspec ignores unknown fields). So strictness is not
put on the structs (``forbid_unknown_fields`` would apply to MQTT too) but checked
here, before decoding, by walking the JSON against the struct's type information
(:func:`msgspec.inspect.type_info`). A person who misspells ``"zones"`` as ``"zone"``
learns it from the 422 instead of seeing the field silently dropped.

Example::

    >>> unknown_fields({"id": "s1", "name": "x", "colour": "red"}, Store)
    ["colour: unknown field; Store has id, latitude, longitude, name, tz"]
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi
from fastapi import HTTPException, Request

from aislecast.kernel.schema import decode

__all__ = ["BodyRefused", "body_of", "strict_decode", "unknown_fields"]

T = TypeVar("T")
_MAX_PROBLEMS = 20  # a body of 10,000 stray keys is answered with the first 20


class BodyRefused(ValueError):
    """``status`` 400 (not JSON) or 422 (``problems``: one ``field: problem`` line each)."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


@functools.cache
def _info(cls: type) -> mi.Type:
    return mi.type_info(cls)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _walk(data: Any, t: mi.Type, path: str, out: list[str]) -> None:
    if len(out) >= _MAX_PROBLEMS:
        return
    if isinstance(t, mi.Metadata):
        _walk(data, t.type, path, out)
    elif isinstance(t, mi.StructType | mi.DataclassType | mi.TypedDictType):
        if not isinstance(data, dict):
            return  # the decoder names the wrong type
        fields = {f.encode_name: f for f in t.fields}
        tag = getattr(t, "tag_field", None)
        for key, value in data.items():
            f = fields.get(key)
            if f is not None:
                _walk(value, f.type, _join(path, key), out)
            elif key != tag:
                out.append(f"{_join(path, str(key)[:64])}: unknown field; "
                           f"{t.cls.__name__} has {', '.join(sorted(fields))}")
    elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        if isinstance(data, list):
            for i, item in enumerate(data):
                _walk(item, t.item_type, f"{path}[{i}]", out)
    elif isinstance(t, mi.DictType):
        if isinstance(data, dict):
            for key, value in data.items():
                _walk(value, t.value_type, f"{path}[{str(key)[:40]!r}]", out)
    elif isinstance(t, mi.UnionType):
        objects = [u for u in t.types if isinstance(u, mi.StructType | mi.DictType)]
        if isinstance(data, dict) and len(objects) == 1:
            _walk(data, objects[0], path, out)
        elif isinstance(data, list):
            lists = [u for u in t.types if isinstance(u, mi.ListType)]
            if len(lists) == 1:
                _walk(data, lists[0], path, out)
    elif isinstance(t, mi.LiteralType) and data not in t.values:
        out.append(f"{path}: {str(data)[:64]!r} is not one of "
                   f"{', '.join(str(v) for v in t.values)}")


def unknown_fields(data: Any, cls: type) -> list[str]:
    """Each key of ``data`` (decoded JSON) that ``cls`` has no field for, as a
    ``path: unknown field`` line naming the fields it does have; and each value of a
    ``Literal`` field that is not one of its values, with the values."""
    out: list[str] = []
    _walk(data, _info(cls), "", out)
    return out


def strict_decode(raw: bytes, cls: type[T]) -> T:
    """``raw`` decoded as ``cls`` with unknown fields refused; raises :class:`BodyRefused`."""
    try:
        data = msgspec.json.decode(raw)
    except RecursionError:
        raise BodyRefused(400, ["body is not valid JSON: it is nested too deeply"]) from None
    except msgspec.DecodeError as exc:
        raise BodyRefused(400, [f"body is not valid JSON: {exc}"]) from exc
    problems = unknown_fields(data, cls)
    if problems:
        raise BodyRefused(422, problems)
    try:
        return decode(raw, cls)
    except msgspec.ValidationError as exc:
        raise BodyRefused(422, [f"invalid {cls.__name__}: {exc}"]) from exc
    except msgspec.DecodeError as exc:
        raise BodyRefused(400, [f"body is not valid JSON: {exc}"]) from exc


async def body_of(request: Request, cls: type[T]) -> T:
    """The request's body as ``cls``, strictly; an HTTP 400 or 422 naming the problem."""
    try:
        return strict_decode(await request.body(), cls)
    except BodyRefused as exc:
        raise HTTPException(exc.status, detail=exc.problems[0] if len(exc.problems) == 1
                            else exc.problems) from exc
