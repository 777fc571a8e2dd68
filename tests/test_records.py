"""Record: a dataclass saved as its fields in order, read back strictly from the fields' type hints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from cifar_helpers.rundir.records import INLINE, Record


@dataclass(frozen=True)
class Inner(Record):
    a: int
    b: float | None


@dataclass(frozen=True)
class Outer(Record):
    inner: Inner = field(metadata=INLINE)
    name: str
    items: tuple[Inner, ...]
    by_key: dict[int, Inner]
    optional: Inner | None


def test_a_record_is_saved_as_its_fields_and_read_back_from_its_json():
    record = Outer(Inner(1, None), "x", (Inner(2, 0.5),), {3: Inner(4, 1.5)}, None)
    saved = record.to_dict()
    assert list(saved) == ["a", "b", "name", "items", "by_key", "optional"]  # inline keys first
    assert saved["items"] == [{"a": 2, "b": 0.5}] and saved["by_key"] == {3: {"a": 4, "b": 1.5}}
    assert Outer.from_dict(saved) == record
    assert Outer.from_dict(json.loads(json.dumps(saved))) == record  # int keys and tuples come back


def test_a_missing_key_is_named():
    saved = Outer(Inner(1, 2.0), "x", (Inner(2, 0.5),), {}, Inner(5, None)).to_dict()
    del saved["optional"]["b"]
    with pytest.raises(KeyError, match="'b'"):
        Outer.from_dict(saved)
    with pytest.raises(KeyError, match="'name'"):
        Outer.from_dict({"a": 1, "b": 2.0})
