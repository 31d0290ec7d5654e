"""The Python codecs against the shared vectors (SPEC §11), as the Rust, TS and Go sides do."""

import json
import os

import pytest

from shmpipe import protocol as p

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
with open(os.path.join(ROOT, "shm-protocol", "vectors", "vectors.json")) as f:
    V = json.load(f)


def test_constants():
    assert V["version"] == p.VERSION
    magic = bytes.fromhex(V["magic_hex"])
    assert magic == b"SHMPIPE\0" and int.from_bytes(magic, "little") == p.MAGIC
    assert V["header_offsets"] == p.HEADER
    assert V["ring_offsets"] == p.RING
    # Every opcode and wire code this client knows has the SPEC's number; the SPEC may define more
    # (ops this client does not offer, codes added in reserved ranges: reported as PROTOCOL).
    for name, op in p.OPCODES.items():
        assert V["opcodes"].get(name) == op, name
    for name, code in p.WIRE_ERROR_CODES.items():
        assert V["error_codes"].get(name) == code, name


def test_reference_header():
    h = V["header"]
    raw = bytes.fromhex(h["hex"])
    page = bytearray(p.HEADER_SIZE)
    page[: len(raw)] = raw
    layout, gen = p.decode_header(page)
    assert gen == int(h["generation"])
    assert layout.__dict__ == {**h["params"], **h["layout"]}
    assert p.compute_layout(**h["params"]) == layout
    out = bytearray(len(raw))
    p.encode_header(layout, gen, out)
    assert bytes(out) == raw
    for field in ("magic", "version", "sq_offset", "slot_offset", "segment_size"):
        bad = bytearray(page)
        bad[V["header_offsets"][field]] ^= 1
        with pytest.raises(p.HeaderMismatch) as e:
            p.decode_header(bad)
        assert e.value.field == field


@pytest.mark.parametrize("v", V["submissions"], ids=lambda v: v["name"])
def test_submission(v):
    if v["error"] is None and v["fields"]["opcode"] not in p.OPCODES.values():
        pytest.skip("an opcode this client does not offer")
    raw = bytes.fromhex(v["hex"])
    s = p.Submission.decode(raw)
    f = v["fields"]
    assert s == p.Submission(int(f["request_id"]), f["opcode"], f["flags"], f["reserved0"], f["slot_id"],
                             f["slot_gen"], f["offset"], f["length"], f["reserved1"], tuple(int(a) for a in f["args"]))
    assert s.encode() == raw
    assert p.validate_submission(s) == v["error"]


@pytest.mark.parametrize("v", V["completions"], ids=lambda v: v["name"])
def test_completion(v):
    raw = bytes.fromhex(v["hex"])
    c = p.Completion.decode(raw)
    f = v["fields"]
    assert c == p.Completion(int(f["request_id"]), f["status"], f["flags"], f["slot_id"], f["slot_gen"],
                             int(f["result"]), tuple(int(a) for a in f["aux"]), 0)
    assert c.problem() is None
    assert c.encode() == raw


def test_grants():
    assert V["grants"]
    for v in V["grants"]:
        raw = bytes.fromhex(v["hex"])
        assert p.decode_grant(raw) == (v["fields"]["slot_id"], v["fields"]["slot_gen"])
        assert p.encode_grant(*p.decode_grant(raw)) == raw


def test_crc32c():
    assert V["crc32c"]
    for v in V["crc32c"]:
        data = v["ascii"].encode("latin1") if "ascii" in v else bytes.fromhex(v["hex"])
        assert p.crc32c(data) == v["crc"]


def test_layout_arithmetic():
    lay = p.compute_layout(1024, 2048, 100, 1 << 20)
    for k in ("sq_offset", "cq_offset", "gq_offset", "slot_offset", "segment_size"):
        assert getattr(lay, k) % p.PAGE_SIZE == 0, k
    assert lay.gq_capacity == 128
    assert lay.cq_offset - lay.sq_offset == p.ring_region_size(1024, 64)
    assert p.compute_layout(2, 2, 1, 4096).gq_capacity == 2
    with pytest.raises(ValueError, match="power of two"):
        p.compute_layout(3, 2, 1, 4096)
