"""Results saved as JSON (or with ``torch.save``): one way to write a dataclass as a dict of its fields
and to read it back strictly, for every layer (this is the lowest)."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

_R = TypeVar("_R", bound="Record")

# Field metadata (``field(metadata=INLINE)``): the field's record is saved as keys of its owner's dict,
# not under the field's name.
INLINE = {"inline": True}


class Record:
    """A dataclass saved as the dict of its fields, in their order; a class overrides :meth:`to_dict`
    and :meth:`from_dict` only where its saved layout is not its fields."""

    def to_dict(self) -> dict[str, Any]:
        """The fields, in their order: JSON-ready when the values are."""
        saved: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = _plain(getattr(self, field.name))
            if "inline" in field.metadata:
                saved.update(value)
            else:
                saved[field.name] = value
        return saved

    @classmethod
    def from_dict(cls: type[_R], values: Mapping[str, Any]) -> _R:
        """Rebuild from :meth:`to_dict`'s output, or its JSON; a missing key raises KeyError naming it."""
        hints = _hints(cls)
        read = {}
        for field in dataclasses.fields(cls):
            value = values if "inline" in field.metadata else values[field.name]
            read[field.name] = _read(hints[field.name], value)
        return cls(**read)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _read(hint: Any, value: Any) -> Any:
    """``value`` as a field typed ``hint`` holds it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        kinds = [kind for kind in args if kind is not type(None)]
        return value if value is None or len(kinds) > 1 else _read(kinds[0], value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint.from_dict(value)
    if origin in (tuple, list):
        return origin(_read(args[0], item) for item in value)
    if origin is dict:
        key_type, item_type = args
        # JSON writes every key as text: an int key is read back as one.
        return {(int(k) if key_type is int else k): _read(item_type, v) for k, v in value.items()}
    return value
