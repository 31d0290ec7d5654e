// The CLI's help, completions and man pages: all generated from the command definitions, so
// these tests check that each output carries every command and every flag, that the shells
// accept the scripts and complete from them (bash always; zsh, fish and groff when installed),
// and that the parser agrees with what the help says.
'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CLI = path.join(__dirname, '..', 'ts-lib', 'dist', 'cli.js');
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SHMPIPE_')));
const run = (args, o = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...env, ...o.env }, input: o.input });
const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/** The definitions, as `help --json` prints them. */
function definitions() {
  const r = run(['help', '--json']);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('shmpipe help, completions and man pages', function () {
  let defs;
  let tmp;
  before(function () {
    defs = definitions();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shmpipe-help-'));
  });
  after(function () {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('documents every option of every command with help text and a placeholder', function () {
    assert.ok(defs.commands.length >= 15, 'the command list');
    for (const c of defs.commands) {
      for (const o of [...c.options, ...defs.global_options]) {
        assert.ok(typeof o.help === 'string' && o.help.length >= 10, `${c.name} --${o.name} has help text`);
        if (o.type === 'string') assert.match(o.value, /^[A-Z][A-Z0-9_:|.,[\]-]*$/, `${c.name} --${o.name} has a value placeholder`);
      }
    }
  });

  it('shmpipe VERB --help and shmpipe help VERB list every flag, its placeholder and the global ones', function () {
    for (const c of defs.commands) {
      const a = run([c.name, '--help']);
      assert.equal(a.status, 0, `${c.name} --help: ${a.stderr}`);
      const b = run(['help', c.name]);
      assert.equal(b.status, 0, b.stderr);
      assert.equal(a.stdout, b.stdout, `help ${c.name} is the same text as ${c.name} --help`);
      assert.ok(a.stdout.startsWith(`usage: shmpipe ${c.name} `), a.stdout);
      for (const o of [...c.options, ...defs.global_options]) {
        const label = o.type === 'string' ? `--${o.name} ${o.value}` : `--${o.name}`;
        assert.ok(a.stdout.includes(label), `${c.name} --help shows '${label}':\n${a.stdout}`);
        if (o.short) assert.ok(a.stdout.includes(`-${o.short}, --${o.name}`), `${c.name} --help shows -${o.short}`);
      }
    }
  });

  it('shmpipe help lists every command with its summary; an unknown command or flag is exit 2', function () {
    const r = run(['help']);
    assert.equal(r.status, 0);
    for (const c of defs.commands) assert.match(r.stdout, new RegExp(`^  ${c.name} +${c.summary.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm'));
    assert.equal(run(['--help']).stdout, r.stdout);
    assert.equal(run(['help', 'frobnicate']).status, 2);
    const bad = run(['init', '--no-such-flag']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /Unknown option '--no-such-flag'/);
    assert.match(bad.stderr, /^usage: shmpipe init \[options\]/m);
  });

  it('takes global options before the command name (a value is not mistaken for the command)', function () {
    const r = run(['--sidecar', '/nonexistent/shmpipe.sock', 'sidecar-stats']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^shmpipe sidecar-stats: .*SHMPIPE_E_/m);
  });

  it('version: the CLI version, as text and as JSON', function () {
    const r = run(['version', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const v = JSON.parse(r.stdout);
    assert.equal(v.type, 'version');
    assert.equal(v.version, require('../package.json').version);
    assert.equal(run(['--version']).stdout.trim(), v.version);
    assert.match(v.sidecar, /^\d+\.\d+\.\d+/, "the sidecar binary's version");
    assert.equal(v.repository_format, null, 'no repository named: no format');
  });

  it('version --repo: the repository format version, read without a password', function () {
    const repo = path.join(tmp, 'repo');
    const init = run(['init', '--repo', repo], { env: { SHMPIPE_PASSWORD: 'version-test' } });
    assert.equal(init.status, 0, init.stderr);
    const r = run(['version', '--repo', repo, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const v = JSON.parse(r.stdout);
    assert.equal(v.repository_format, 2, 'init writes format 2 (keyed chunker)');
    assert.match(run(['version', '--repo', repo]).stdout, /format version 2/);
    assert.equal(JSON.parse(run(['version', '--repo', path.join(tmp, 'none'), '--json']).stdout).repository_format, null);
  });

  it('completion bash: completes commands, every flag of every command, and fixed values', function () {
    const script = path.join(tmp, 'shmpipe.bash');
    const r = run(['completion', 'bash']);
    assert.equal(r.status, 0, r.stderr);
    fs.writeFileSync(script, r.stdout);
    /** COMPREPLY for the words (the last one is being completed). */
    const complete = (...words) => {
      const quoted = words.map((w) => `'${w.replace(/'/g, "'\\''")}'`).join(' ');
      const b = spawnSync('bash', ['-c', `source "$1"; COMP_WORDS=(shmpipe ${quoted}); COMP_CWORD=${words.length}; _shmpipe; printf '%s\\n' "\${COMPREPLY[@]}"`, 'bash', script], { encoding: 'utf8' });
      assert.equal(b.status, 0, b.stderr);
      return b.stdout.split('\n').filter((l) => l !== '');
    };
    assert.deepEqual(complete('').sort(), defs.commands.map((c) => c.name).sort());
    assert.deepEqual(complete('comp'), ['completion']);
    assert.deepEqual(complete('completion', ''), ['bash', 'zsh', 'fish']);
    assert.deepEqual(complete('help', 'sn'), ['snapshots']);
    for (const c of defs.commands) {
      const got = complete(c.name, '--');
      for (const o of [...c.options, ...defs.global_options]) assert.ok(got.includes(`--${o.name}`), `bash completes ${c.name} --${o.name}: ${got.join(' ')}`);
    }
    // A value: a global option's value before the command is skipped; a file option completes files.
    fs.writeFileSync(path.join(tmp, 'pw-file'), 'x');
    assert.deepEqual(complete('--sidecar', '/x', 'ini'), ['init']);
    assert.deepEqual(complete('init', '--password-file', path.join(tmp, 'pw-')), [path.join(tmp, 'pw-file')]);
  });

  it('completion zsh: a script zsh parses and loads, with every command and flag', function () {
    const r = run(['completion', 'zsh']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.startsWith('#compdef shmpipe\n'));
    for (const c of defs.commands) {
      assert.ok(r.stdout.includes(`    '${c.name}:`), `zsh lists ${c.name}`);
      for (const o of c.options) assert.ok(r.stdout.includes(`--${o.name}`), `zsh has ${c.name} --${o.name}`);
    }
    if (!has('zsh')) return this.skip(); // the text checks above still ran
    const file = path.join(tmp, '_shmpipe');
    fs.writeFileSync(file, r.stdout);
    const z = spawnSync('zsh', ['-c', 'zsh -n "$1" && autoload -U compinit && compinit -u -d "$2" && source "$1" && print -r -- ${_comps[shmpipe]}', 'zsh', file, path.join(tmp, 'zcompdump')], { encoding: 'utf8' });
    assert.equal(z.status, 0, z.stderr);
    assert.equal(z.stdout.trim(), '_shmpipe');
  });

  it('completion fish: fish completes commands, flags and values from it', function () {
    const r = run(['completion', 'fish']);
    assert.equal(r.status, 0, r.stderr);
    if (!has('fish')) return this.skip();
    const file = path.join(tmp, 'shmpipe.fish');
    fs.writeFileSync(file, r.stdout);
    const complete = (line) => {
      const f = spawnSync('fish', ['--no-config', '-c', `source '${file}'; complete -C '${line}'`], { encoding: 'utf8' });
      assert.equal(f.status, 0, f.stderr);
      return f.stdout.split('\n').filter((l) => l !== '').map((l) => l.split('\t')[0]);
    };
    assert.deepEqual(complete('shmpipe comp'), ['completion']);
    assert.deepEqual(complete('shmpipe completion ').sort(), ['bash', 'fish', 'zsh']);
    const backup = defs.commands.find((c) => c.name === 'backup');
    const got = complete('shmpipe backup --');
    for (const o of [...backup.options, ...defs.global_options]) assert.ok(got.includes(`--${o.name}`), `fish completes backup --${o.name}: ${got.join(' ')}`);
  });

  it('generate --man: one page per command and one for the program, clean roff, every flag in it', function () {
    const dir = path.join(tmp, 'man');
    const r = run(['generate', '--man', dir, '--json'], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
    assert.equal(r.status, 0, r.stderr);
    const written = JSON.parse(r.stdout).written.map((f) => path.basename(f)).sort();
    assert.deepEqual(written, ['shmpipe.1', ...defs.commands.map((c) => `shmpipe-${c.name}.1`)].sort());
    const page = fs.readFileSync(path.join(dir, 'shmpipe.1'), 'utf8');
    assert.match(page, /^\.TH "SHMPIPE" "1" "2023-11-14" "shmpipe /m);
    for (const c of defs.commands) for (const o of c.options) assert.ok(page.includes(`\\fB\\-\\-${o.name.replace(/-/g, '\\-')}\\fR`), `shmpipe.1 has ${c.name} --${o.name}`);
    assert.equal(run(['generate']).status, 2, 'generate without an output is a usage error');
    if (!has('groff')) return this.skip();
    for (const f of written) {
      const g = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', path.join(dir, f)], { encoding: 'utf8' });
      assert.equal(g.status, 0, g.stderr);
      assert.equal(g.stderr, '', `groff warns about ${f}`);
    }
    const text = spawnSync('groff', ['-man', '-Tascii', path.join(dir, 'shmpipe-backup.1')], { encoding: 'utf8' }).stdout.replace(/.\x08/g, '');
    assert.match(text, /--parent ID/);
    assert.match(text, /REPOSITORY OPTIONS/);
  });
});
