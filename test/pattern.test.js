// The filter pattern matcher (ts-lib/src/backup/pattern.ts): restic's documented examples
// ("Excluding files" in restic's manual) as a table, then the rules they imply — components,
// anchoring, `**`, classes and escapes, bad patterns, `!` in lists, case folding — and the
// glob expansion of `--files-from` lines.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { PatternList, PatternError, matchPattern, parsePattern, expandGlob, cleanPath } = require('../ts-lib/dist/backup.js');

/** [pattern, path, matches] */
const DOCUMENTED = [
  // "Patterns need to match on complete path components. For example, the pattern foo:"
  ['foo', '/dir1/foo/dir2/file', true],
  ['foo', '/dir/foo', true],
  ['foo', '/dir/foobar', false],
  ['foo', 'barfoo', false],
  // "A trailing / is ignored, a leading / anchors the pattern at the root directory."
  ['/bin', '/bin/bash', true],
  ['/bin', '/usr/bin/restic', false],
  ['/bin/', '/bin/bash', true],
  // "Regular wildcards cannot be used to match over the directory separator /"
  ['b*ash', '/bin/bash', true],
  ['b*ash', '/bin/ash', false],
  // "The pattern foo/**/bar matches:"
  ['foo/**/bar', '/dir1/foo/dir2/bar/file', true],
  ['foo/**/bar', '/foo/bar/file', true],
  ['foo/**/bar', '/tmp/foo/bar', true],
  // excludes.txt: "exclude foo/x/y/z/bar foo/x/bar foo/bar"
  ['foo/**/bar', '/foo/x/y/z/bar', true],
  ['foo/**/bar', '/foo/x/bar', true],
  ['foo/**/bar', '/foo/bar', true],
  ['*.go', '/home/user/work/main.go', true],
  ['*.c', '/home/user/work/x.c', true],
  ['*.c', '/home/user/work/x.go', false],
  // --exclude '/home/user/repos/**/target' on the documented tree
  ['/home/user/repos/**/target', '/home/user/repos/repo1/target', true],
  ['/home/user/repos/**/target', '/home/user/repos/repo2_workspace/project1/target', true],
  ['/home/user/repos/**/target', '/home/user/repos/repo2_workspace/project2/target/debug/x', true],
  ['/home/user/repos/**/target', '/home/user/repos/repo1/src', false],
  ['/home/user/repos/**/target', '/home/user/repos/repo3/bin', false],
  ['/home/user/repos/**/target', '/home/user/repos', false],
  // "to exclude a file named foo bar star.txt, put that just as it reads"
  ['foo bar star.txt', '/home/u/foo bar star.txt', true],
  ['foo bar star/foo.txt', '/home/u/foo bar star/foo.txt', true],
];

/** Rules the documentation implies, with Go's filepath.Match syntax per component. */
const RULES = [
  ['*', '/a/b/c', true],
  ['**', '/a/b/c', true],
  ['*', '/', false],
  ['a*', '/x/abc/y', true],
  ['/a*', '/x/abc', false],
  ['/x/*', '/x', false],
  ['/x/*', '/x/y', true],
  ['/x/*/z.*', '/x/y/z.go', true],
  ['/x/*z.*', '/x/y/z.go', false],
  ['/*/*/c/d', '/a/b/c/d', true],
  ['/*/*/c/d', '/a/c/d', false],
  ['y/z.go', '/x/y/z.go', true],
  ['Z.go', '/x/y/z.go', false],
  ['/x//y', '/x/y', true],
  ['/x/./y', '/x/y', true],
  ['/x/../y', '/y', true],
  ['/x/../y', '/x/y', false],
  ['a/**/b/*.go', '/home/a/w/s/p/b/t.go', true],
  ['a/**/b/*.go', 'a/b/t.go', true],
  ['a/**/b/*.go', 'a/b/c/b/t.go', true],
  ['a/**/b/*.go', '/home/a/t.c', false],
  ['a/**/b/*.go', 'b/a/m.go', false],
  ['a/**/b/**/x', '/h/a/b/x', true],
  ['a/**/b/**/x', '/h/a/q/r/b/s/t/x', true],
  ['u/**/imp*', '/h/u/w/x/hidden/x', false],
  ['u/**/hid*/**/c', '/h/u/w/hidden/z/a/b/c', true],
  ['f?o', '/f/fao', true],
  ['f?o', '/f/fo', false],
  ['f?o', '/f/f€o', true], // one character, not one byte
  ['[abc]x', '/bx', true],
  ['[abc]x', '/dx', false],
  ['[^abc]x', '/dx', true],
  ['[^abc]x', '/ax', false],
  ['[a-c]x', '/bx', true],
  ['[c-a]x', '/bx', false], // a reversed range matches nothing
  ['[\\]]x', '/]x', true],
  ['\\*x', '/*x', true],
  ['\\*x', '/ax', false],
  ['a\\?', '/a?', true],
  ['a\\?', '/ab', false],
  ['new\nline', '/d/new\nline', true],
  ['*line', '/d/new\nline', true],
];

describe('filter patterns (restic semantics)', function () {
  for (const [table, rows] of [['documented examples', DOCUMENTED], ['rules', RULES]]) {
    it(`${table}: ${rows.length} cases`, function () {
      const wrong = rows.filter(([p, f, want]) => matchPattern(p, f) !== want).map(([p, f, want]) => `${JSON.stringify(p)} vs ${JSON.stringify(f)}: expected ${want}`);
      assert.deepEqual(wrong, []);
    });
  }

  it('bad patterns are a PatternError that names the pattern', function () {
    for (const bad of ['[', '[]', '[a', 'x\\', '[a-]', '[]a]', 'a/[z-/b', '[\\']) {
      assert.throws(() => parsePattern(bad), (e) => e instanceof PatternError && e.message.includes(JSON.stringify(bad)), bad);
    }
    assert.throws(() => new PatternList(['ok', '[']), PatternError);
  });

  it('a list: any pattern excludes, a later ! pattern cancels (gitignore-like), empty entries ignored', function () {
    const home = '/home/u';
    const l = new PatternList([`${home}/*`, `!${home}/Documents`, `!${home}/code`, '', 'node_modules', '*~']);
    const cases = [
      [`${home}/Music`, true],
      [`${home}/Documents`, false],
      [`${home}/Documents/a.txt`, false],
      [`${home}/code/x/node_modules`, true],
      [`${home}/code/notes.txt~`, true],
      [`${home}/code/main.c`, false],
      ['/etc/passwd', false],
    ];
    for (const [f, want] of cases) assert.equal(l.matches(f), want, f);
    assert.equal(new PatternList([]).matches('/a'), false);
    assert.equal(new PatternList(['', '']).empty, true);
    // ! only cancels matches before it.
    assert.equal(new PatternList(['!x', 'x']).matches('/a/x'), true);
  });

  it('childMayMatch: whether something below a directory can match an anchored pattern (for includes)', function () {
    const l = new PatternList(['/home/u/docs/*.txt']);
    assert.deepEqual(l.test('/home'), { matched: false, childMayMatch: true });
    assert.deepEqual(l.test('/home/u/docs'), { matched: false, childMayMatch: true });
    assert.deepEqual(l.test('/home/v'), { matched: false, childMayMatch: false });
    assert.deepEqual(l.test('/home/u/docs/a.txt'), { matched: true, childMayMatch: true });
    assert.equal(new PatternList(['/a/**/z']).test('/a/b/c/d').childMayMatch, true);
    assert.equal(new PatternList(['/a/**/z']).test('/b/c').childMayMatch, false);
    assert.equal(new PatternList(['z']).test('/b/c').childMayMatch, true, 'a relative pattern can match anywhere below');
  });

  it('case folding (--iexclude): patterns and paths lower-cased', function () {
    const l = new PatternList(['*.JPG', '/Home/User/Cache'], true);
    assert.equal(l.matches('/x/photo.jpg'), true);
    assert.equal(l.matches('/x/PHOTO.Jpg'), true);
    assert.equal(l.matches('/home/user/cache/x'), true);
    assert.equal(new PatternList(['*.JPG']).matches('/x/photo.jpg'), false);
  });

  it('cleanPath is Go path.Clean', function () {
    const cases = [['/a//b/', '/a/b'], ['a/./b', 'a/b'], ['/../a', '/a'], ['a/..', '.'], ['/', '/'], ['', '.']];
    for (const [i, o] of cases) assert.equal(cleanPath(i), o, i);
  });

  it('expandGlob: the existing paths a --files-from line names, sorted; literal and relative lines', async function () {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-glob-'));
    try {
      for (const f of ['a/x.txt', 'a/y.txt', 'a/z.log', 'b/x.txt', 'c d/[x].txt']) {
        fs.mkdirSync(path.dirname(path.join(d, f)), { recursive: true });
        fs.writeFileSync(path.join(d, f), '');
      }
      assert.deepEqual(await expandGlob(`${d}/*/x.txt`), [`${d}/a/x.txt`, `${d}/b/x.txt`]);
      assert.deepEqual(await expandGlob(`${d}/a/*.txt`), [`${d}/a/x.txt`, `${d}/a/y.txt`]);
      assert.deepEqual(await expandGlob(`${d}/a/?.log`), [`${d}/a/z.log`]);
      assert.deepEqual(await expandGlob(`${d}/c d/\\[x\\].txt`), [`${d}/c d/[x].txt`]);
      assert.deepEqual(await expandGlob(`${d}/a`), [`${d}/a`]);
      assert.deepEqual(await expandGlob(`${d}/nope/*`), []);
      assert.deepEqual(await expandGlob(`${d}/nope`), []);
      const cwd = process.cwd();
      process.chdir(d);
      try {
        assert.deepEqual(await expandGlob('a/[xy].txt'), ['a/x.txt', 'a/y.txt']);
      } finally {
        process.chdir(cwd);
      }
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});
