// connect() option validation: every bad option is refused before any I/O with
// SHMPIPE_E_INVALID_ARGUMENT and a message that names it.
'use strict';

const assert = require('node:assert/strict');
const { bundle } = require('./helpers/paths');

const { connect, ShmpipeError } = require(bundle);

const socketPath = '/nonexistent/shmpipe-test.sock';

async function refused(options, pattern) {
  await assert.rejects(connect(options), (e) => {
    assert.ok(e instanceof ShmpipeError, `not a ShmpipeError: ${e}`);
    assert.equal(e.code, 'SHMPIPE_E_INVALID_ARGUMENT');
    assert.match(e.message, pattern);
    return true;
  });
}

describe('connect() options', () => {
  const cases = [
    [undefined, /options must be an object/],
    [null, /options must be an object/],
    ['path', /options must be an object/],
    [{}, /socketPath is required/],
    [{ socketPath: 42 }, /socketPath must be a string/],
    [{ socketPath: '' }, /socketPath must not be empty/],
    [{ socketPath: 'a\0b' }, /NUL/],
    [{ socketPath: `/tmp/${'x'.repeat(200)}` }, /at most 107 bytes/],
    [{ socketPath, slotCount: 0 }, /slotCount must be at least 1/],
    [{ socketPath, slotCount: 65536 }, /slotCount must be at most 65535/],
    [{ socketPath, slotCount: 1.5 }, /slotCount must be an integer/],
    [{ socketPath, slotCount: '4' }, /slotCount must be a number/],
    [{ socketPath, slotSize: 1000 }, /slotSize must be at least 4096/],
    [{ socketPath, slotSize: 4097 }, /slotSize must be a multiple of 4096/],
    [{ socketPath, slotSize: 2 ** 31 }, /slotSize must be at most/],
    [{ socketPath, sqCapacity: 100 }, /sqCapacity must be a power of two/],
    [{ socketPath, sqCapacity: 1 }, /sqCapacity must be at least 2/],
    [{ socketPath, cqCapacity: 131072 }, /cqCapacity must be at most 65536/],
    [{ socketPath, cqCapacity: NaN }, /cqCapacity must be/],
    [{ socketPath, maxQueued: -1 }, /maxQueued must not be negative/],
    [{ socketPath, clientName: 7 }, /clientName must be a string/],
    [{ socketPath, clientName: 'x'.repeat(300) }, /clientName must be at most 256/],
    [{ socketPath, connectTimeoutMs: 0 }, /connectTimeoutMs must be at least 1/],
    [{ socketPath, socketpath: '/x' }, /unknown option\(s\): socketpath/],
    [{ socketPath, slotCount: 0, sqCapacity: 3 }, /slotCount.*sqCapacity|sqCapacity.*slotCount/],
  ];
  for (const [options, pattern] of cases) {
    it(`refuses ${JSON.stringify(options, (k, v) => (typeof v === 'string' && v.length > 40 ? `${v.slice(0, 10)}…(${v.length})` : Number.isNaN(v) ? 'NaN' : v))}`, () =>
      refused(options, pattern));
  }

  it('valid options get past validation (then fail to connect: no sidecar there)', async () => {
    await assert.rejects(connect({ socketPath, slotCount: 4, slotSize: 8192, sqCapacity: 64, cqCapacity: 64, maxQueued: 10, clientName: 'x', connectTimeoutMs: 1000 }), (e) => {
      assert.equal(e.code, 'SHMPIPE_E_DISCONNECTED');
      assert.match(e.message, /ENOENT/);
      return true;
    });
  });
});
