// The TS client's protocol codecs against the committed test vectors (SPEC §11): every entry and
// the reference header decode to the listed fields and re-encode to the same bytes; offsets,
// opcodes and error codes equal the SPEC's; the CRC-32C used to check echoes matches.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const { bundle, vectors: vectorsPath } = require('./helpers/paths');
const { crc32c } = require('./helpers/crc32c');

const { protocol: p, WIRE_ERROR_CODES } = require(bundle);

const vectors = JSON.parse(fs.readFileSync(vectorsPath, 'utf8'));
const hex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const toHex = (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

describe('protocol vectors (shm-protocol/vectors/vectors.json)', () => {
  it('is version 1 with the SPEC magic', () => {
    assert.equal(vectors.version, p.VERSION);
    const magic = hex(vectors.magic_hex);
    assert.equal(magic.toString('latin1'), 'SHMPIPE\0');
    assert.equal(magic.readBigUInt64LE(0), p.MAGIC);
  });

  it('header and ring offsets equal the client constants', () => {
    assert.deepEqual({ ...p.HEADER }, vectors.header_offsets);
    assert.deepEqual({ ...p.RING }, vectors.ring_offsets);
  });

  it('opcodes and wire error codes equal the client constants', () => {
    assert.deepEqual({ ...p.OPCODES }, vectors.opcodes);
    assert.deepEqual({ ...WIRE_ERROR_CODES }, vectors.error_codes);
  });

  it('the reference header decodes to its layout and re-encodes byte for byte', () => {
    const h = vectors.header;
    const bytes = hex(h.hex);
    const page = new Uint8Array(p.HEADER_SIZE);
    page.set(bytes);
    const { layout, generation } = p.decodeHeader(page);
    assert.equal(generation, BigInt(h.generation));
    assert.deepEqual(layout, { ...h.params, ...h.layout });
    assert.deepEqual(p.computeLayout(h.params), layout);
    const out = new Uint8Array(bytes.length);
    p.encodeHeader(layout, generation, out);
    assert.equal(toHex(out), toHex(bytes));
  });

  it('a tampered header is rejected naming the field', () => {
    const page = new Uint8Array(p.HEADER_SIZE);
    page.set(hex(vectors.header.hex));
    for (const field of ['magic', 'version', 'sq_offset', 'slot_offset', 'segment_size']) {
      const bad = page.slice();
      bad[vectors.header_offsets[field]] ^= 1;
      assert.throws(() => p.decodeHeader(bad), (e) => e.field === field, field);
    }
  });

  for (const v of vectors.submissions) {
    it(`submission "${v.name}" round-trips and validates to ${v.error ?? 'ok'}`, () => {
      const bytes = hex(v.hex);
      assert.equal(bytes.length, p.ENTRY_SIZE);
      const s = p.decodeSubmission(bytes);
      const f = v.fields;
      assert.deepEqual(s, {
        request_id: BigInt(f.request_id),
        opcode: f.opcode,
        flags: f.flags,
        reserved0: f.reserved0,
        slot_id: f.slot_id,
        slot_gen: f.slot_gen,
        offset: f.offset,
        length: f.length,
        reserved1: f.reserved1,
        args: f.args.map(BigInt),
      });
      assert.equal(toHex(p.encodeSubmission(s)), v.hex);
      assert.equal(p.validateSubmission(s), v.error);
    });
  }

  for (const v of vectors.completions) {
    it(`completion "${v.name}" round-trips`, () => {
      const bytes = hex(v.hex);
      const c = p.decodeCompletion(bytes);
      const f = v.fields;
      assert.deepEqual(c, {
        request_id: BigInt(f.request_id),
        status: f.status,
        flags: f.flags,
        slot_id: f.slot_id,
        slot_gen: f.slot_gen,
        result: BigInt(f.result),
        aux: f.aux.map(BigInt),
        reserved: 0n,
      });
      assert.equal(p.completionProblem(c), null);
      assert.equal(toHex(p.encodeCompletion(c)), v.hex);
    });
  }

  for (const [i, v] of vectors.grants.entries()) {
    it(`grant ${i} round-trips`, () => {
      const bytes = hex(v.hex);
      const g = p.decodeGrant(bytes);
      assert.deepEqual(g, v.fields);
      assert.equal(toHex(p.encodeGrant(g)), v.hex);
    });
  }

  it('CRC-32C check values', () => {
    assert.ok(vectors.crc32c.length > 0);
    for (const v of vectors.crc32c) {
      const data = v.ascii !== undefined ? Buffer.from(v.ascii, 'latin1') : hex(v.hex);
      assert.equal(crc32c(data), v.crc, JSON.stringify(v));
    }
  });

  it('layout arithmetic: regions page-aligned, GQ holds every slot', () => {
    const l = p.computeLayout({ sq_capacity: 1024, cq_capacity: 2048, slot_count: 100, slot_size: 1 << 20 });
    for (const k of ['sq_offset', 'cq_offset', 'gq_offset', 'slot_offset', 'segment_size']) assert.equal(l[k] % p.PAGE_SIZE, 0, k);
    assert.equal(l.gq_capacity, 128);
    assert.equal(l.cq_offset - l.sq_offset, p.ringRegionSize(1024, 64));
    assert.throws(() => p.computeLayout({ sq_capacity: 3, cq_capacity: 2, slot_count: 1, slot_size: 4096 }), /power of two/);
  });
});
