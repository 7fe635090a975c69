"""The inputUri rule and the JSONL reader's line splitting (pure)."""

from __future__ import annotations

import io

import pytest

from shared.errors import InvalidRequest, NotFound
from shared.kinds import jsonl_input
from shared.kinds.jsonl_input import _lines, input_object, object_of


def test_a_tenant_reads_only_its_own_prefix_of_the_inputs_bucket() -> None:
    assert object_of("gs://b/inputs/acme/x.jsonl", bucket_name="b", tenant="acme") == "inputs/acme/x.jsonl"
    with pytest.raises(NotFound):
        object_of("gs://b/inputs/other/x.jsonl", bucket_name="b", tenant="acme")
    with pytest.raises(NotFound):
        object_of("gs://b/inputs/acme-2/x.jsonl", bucket_name="b", tenant="acme")
    with pytest.raises(NotFound):
        object_of("gs://b/inputs/acme/../other/x.jsonl", bucket_name="b", tenant="acme")
    # A tenant's name is escaped: "acme/x" has a prefix of its own, not one inside acme's.
    assert input_object("acme/x", "u") == "inputs/acme%2Fx/u.jsonl"
    with pytest.raises(NotFound):
        object_of("gs://b/inputs/acme/x/u.jsonl", bucket_name="b", tenant="acme/x")
    for uri in (
        "gs://c/inputs/acme/x.jsonl",
        "gs://b/batches/acme/x",
        "https://b/inputs/acme/x",
        "b/inputs/acme",
    ):
        with pytest.raises(InvalidRequest):
            object_of(uri, bucket_name="b", tenant="acme")


def test_lines_split_across_read_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonl_input, "READ_BLOCK_BYTES", 4)
    data = b'{"a":1}\n\n{"bb":22}\r\n{"c":3}'

    assert list(_lines(io.BytesIO(data))) == [(1, b'{"a":1}'), (2, b""), (3, b'{"bb":22}\r'), (4, b'{"c":3}')]


def test_a_line_longer_than_the_limit_is_refused_while_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonl_input, "READ_BLOCK_BYTES", 4)
    monkeypatch.setattr(jsonl_input, "MAX_LINE_BYTES", 10)

    with pytest.raises(InvalidRequest) as raised:
        list(_lines(io.BytesIO(b"ok\n" + b"x" * 50)))
    assert raised.value.details[0]["field"] == "inputUri line 2"
