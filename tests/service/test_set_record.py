"""A stimulus set's record (``storage/set_record.py``): typed, stored and read back whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from stimloop.storage.session import NotFoundError
from stimloop.storage.set_record import SetRecord
from stimloop.storage.store import Store


def test_a_record_goes_to_set_json_and_comes_back_the_same(tmp_path):
    store = Store(tmp_path)
    record = SetRecord.new(
        "bodies",
        "body",
        "directory",
        tmp_path / "img",
        [("b1", "b1.png", "aa"), ("b2", "b2.png", "bb")],
    )
    store.put_set(record)
    back = store.get_set("bodies")
    assert back == record and back.count == 2 and back.ids == ["b1", "b2"]
    assert back.paths() == {"b1": tmp_path / "img/b1.png", "b2": tmp_path / "img/b2.png"}
    assert back.entry("b2").sha256 == "bb" and back.entry("b3") is None
    assert [r.id for r in store.list_sets()] == ["bodies"]
    with pytest.raises(NotFoundError, match="register it first"):
        store.get_set("objects")


def test_same_images_means_same_category_ids_and_contents_in_order():
    a = SetRecord.new("s", "body", "upload", Path("x"), [("b1", "b1.png", "aa")])
    assert a.same_images(
        SetRecord.new("s", "body", "directory", Path("y"), [("b1", "b1.jpg", "aa")])
    )
    assert not a.same_images(
        SetRecord.new("s", "object", "upload", Path("x"), [("b1", "b1.png", "aa")])
    )
    assert not a.same_images(
        SetRecord.new("s", "body", "upload", Path("x"), [("b1", "b1.png", "ab")])
    )
