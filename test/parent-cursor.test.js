// The incremental backup's parent cursor (ts-lib/src/backup/parent-cursor.ts): the order it
// assumes is the walk's own (checked on a real tree with names that sort differently as bytes,
// as UTF-16 strings and as whole paths), and the lookup is a merge join that reads the parent
// lazily — one entry ahead of the walk, never the whole snapshot — and matches exactly the
// paths both have.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { walk, WalkOrder, ParentCursor } = require('../ts-lib/dist/backup.js');

/** Names chosen to disagree between byte order, JS string order and whole-path order. */
const NAMES = ['a', 'a.b', 'ab', 'a b', 'B', 'é', '\u{1F600}', '\uFFFD', 'x\\y', Buffer.from([0xff, 0x61]), Buffer.from([0x61, 0xff])];

function makeTree(root) {
  const mk = (dir, depth) => {
    for (const n of NAMES) {
      const p = Buffer.concat([Buffer.from(dir), Buffer.from('/'), Buffer.isBuffer(n) ? n : Buffer.from(n)]);
      const isDir = depth < 2 && (n === 'a' || n === 'a.b' || Buffer.isBuffer(n));
      if (isDir) {
        fs.mkdirSync(p);
        mk(p, depth + 1);
      } else fs.writeFileSync(p, 'x');
    }
  };
  fs.mkdirSync(root);
  mk(root, 0);
}

async function walkPaths(roots) {
  const out = [];
  for await (const e of walk(roots, (err) => assert.fail(JSON.stringify(err)))) out.push(e.path);
  return out;
}

/** An entry listing like ops.entries(): yields entries of `paths`, counting what was pulled. */
function listing(paths) {
  const it = {
    pulled: 0,
    async *[Symbol.asyncIterator]() {
      for (const p of paths) {
        it.pulled++;
        yield { path: p, kind: 'file', size: 1n, mtimeNs: 1n, inode: 1n, ctimeNs: 1n, content: `c:${p}`, xattrs: undefined };
      }
    },
  };
  return it;
}

describe('parent cursor', function () {
  let work;
  before(function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-parent-cursor-'));
  });
  after(function () {
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("orders paths exactly as the walk yields them (several roots, tricky names)", async function () {
    const roots = [path.join(work, 'zz'), path.join(work, 'aa')];
    for (const r of roots) makeTree(r);
    const paths = await walkPaths(roots);
    assert.ok(paths.length > 200, `${paths.length}`);
    const order = new WalkOrder(['zz', 'aa']);
    for (let i = 1; i < paths.length; i++) {
      const [a, b] = [order.key(paths[i - 1]), order.key(paths[i])];
      assert.ok(a && b, `${paths[i - 1]} / ${paths[i]}`);
      assert.ok(WalkOrder.compare(a, b) < 0, `${paths[i - 1]} must come before ${paths[i]}`);
      assert.ok(WalkOrder.compare(b, a) > 0);
    }
    assert.equal(WalkOrder.compare(order.key(paths[5]), order.key(paths[5])), 0);
    assert.equal(order.key('elsewhere/x'), null);
  });

  it('matches exactly the common paths, reading the parent one entry ahead of the walk', async function () {
    // The parent: a walk of the tree as it was; then files are deleted and added, and the
    // backup walks the tree as it is.
    const root = path.join(work, 'changing');
    makeTree(root);
    const parentPaths = await walkPaths([root]);
    let i = 0;
    for await (const e of walk([root], () => {})) {
      if (e.kind === 'file' && i++ % 4 === 0) fs.rmSync(e.abs);
      if (e.kind === 'dir') fs.writeFileSync(Buffer.concat([e.abs, Buffer.from(`/new-${i}`)]), 'n');
    }
    const paths = await walkPaths([root]);
    const before = new Set(parentPaths);
    const common = paths.filter((p) => before.has(p));
    assert.ok(common.length > 50 && common.length < paths.length && common.length < parentPaths.length);

    const src = listing(parentPaths);
    const cursor = new ParentCursor(src, new WalkOrder(['changing']));
    const matched = [];
    for (const p of paths) {
      const e = await cursor.lookup(p);
      if (e !== undefined) {
        assert.equal(e.content, `c:${p}`, p);
        matched.push(p);
        // Lazy: nothing beyond this entry's position (+1 lookahead) has been pulled.
        assert.ok(src.pulled <= parentPaths.indexOf(p) + 2, `pulled ${src.pulled} at ${p}`);
      }
    }
    assert.deepEqual(matched, common);
    await cursor.close();
  });

  it('a parent in another order only loses matches, never matches a wrong path', async function () {
    const paths = await walkPaths([path.join(work, 'zz')]);
    const order = new WalkOrder(['zz']);
    const cursor = new ParentCursor(listing([...paths].reverse()), order);
    for (const p of paths) {
      const e = await cursor.lookup(p);
      if (e !== undefined) assert.equal(e.content, `c:${p}`);
    }
  });
});
