/**
 * Help text, made from the command declarations (command.ts): `shmpipe help` (the commands and
 * the global options) and `shmpipe help VERB` / `shmpipe VERB --help` (synopsis, description,
 * every option with its placeholder, default and variable, grouped, then the global options).
 */

import { synopsis, type Command, type OptionSpec, type Options, type Program } from './command';

const WIDTH = 80;
/** Where option texts start. */
const TEXT_COLUMN = 30;

/** Words of `text` in lines of at most `width` (a word longer than that gets its own line). */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** `-v, --verbose` or `    --exclude PATTERN`. */
export function flagLabel(name: string, o: OptionSpec): string {
  const value = o.type === 'string' ? ` ${o.value}` : '';
  return `${o.short !== undefined ? `-${o.short}, ` : '    '}--${name}${value}`;
}

/** The option's help with what else a user must know: repeatable, choices, default, variable. */
export function optionText(o: OptionSpec): string {
  const notes: string[] = [];
  if (o.type === 'string' && o.multiple) notes.push('repeatable');
  if (o.type === 'string' && o.choices !== undefined) notes.push(`one of: ${o.choices.join(', ')}`);
  if (o.type === 'string' && o.default !== undefined) notes.push(`default: ${o.default}`);
  if (o.env !== undefined) notes.push(`env: ${o.env}`);
  return notes.length > 0 ? `${o.help} (${notes.join('; ')})` : o.help;
}

function optionLines(options: Options): string[] {
  const lines: string[] = [];
  for (const [name, o] of Object.entries(options)) {
    if (o.hidden) continue;
    const label = `  ${flagLabel(name, o)}`;
    const text = wrap(optionText(o), WIDTH - TEXT_COLUMN);
    if (label.length + 2 > TEXT_COLUMN) {
      lines.push(label);
      for (const t of text) lines.push(' '.repeat(TEXT_COLUMN) + t);
    } else {
      lines.push(label.padEnd(TEXT_COLUMN) + (text[0] ?? ''));
      for (const t of text.slice(1)) lines.push(' '.repeat(TEXT_COLUMN) + t);
    }
  }
  return lines;
}

/** Options by `group`, in the order groups first appear (ungrouped first, as `options`). */
export function groups(options: Options, fallback = 'options'): [string, Options][] {
  const by = new Map<string, Options>();
  for (const [name, o] of Object.entries(options)) {
    if (o.hidden) continue;
    const g = o.group ?? fallback;
    if (!by.has(g)) by.set(g, {});
    by.get(g)![name] = o;
  }
  const all = [...by.entries()];
  return [...all.filter(([g]) => g === fallback), ...all.filter(([g]) => g !== fallback)];
}

function paragraphs(text: string | undefined, indent = ''): string[] {
  if (text === undefined) return [];
  const out: string[] = [];
  for (const p of text.split(/\n\s*\n/)) {
    if (out.length > 0) out.push('');
    out.push(...wrap(p, WIDTH - indent.length).map((l) => indent + l));
  }
  return out;
}

/** `shmpipe help`: the commands and the global options. */
export function programHelp(p: Program): string {
  const visible = p.commands;
  const width = Math.max(...visible.map((c) => c.name.length));
  return [
    `${p.name} ${p.version} — ${p.summary}`,
    '',
    `usage: ${p.name} <command> [options] [arguments]`,
    '',
    'commands:',
    ...visible.flatMap((c) => {
      const text = wrap(c.summary, WIDTH - width - 4);
      return [`  ${c.name.padEnd(width)}  ${text[0] ?? ''}`, ...text.slice(1).map((t) => ' '.repeat(width + 4) + t)];
    }),
    '',
    'global options (after the command name):',
    ...optionLines(p.globalOptions),
    '',
    `'${p.name} help <command>' or '${p.name} <command> --help' shows a command's options.`,
    'exit codes: 0 ok, 1 error, 2 usage, 3 partial (some files failed), 130/143 interrupted.',
  ].join('\n');
}

/** `shmpipe help VERB`: synopsis, description, options by group, global options, examples. */
export function commandHelp(p: Program, c: Command): string {
  const out = [`usage: ${synopsis(c, p.name)}`, '', ...wrap(c.summary.charAt(0).toUpperCase() + c.summary.slice(1) + '.', WIDTH)];
  if (c.description !== undefined) out.push('', ...paragraphs(c.description));
  for (const [group, options] of groups(c.options)) out.push('', `${group}:`, ...optionLines(options));
  out.push('', 'global options:', ...optionLines(p.globalOptions));
  if (c.examples !== undefined && c.examples.length > 0) out.push('', 'examples:', ...c.examples.map((e) => `  ${e}`));
  return out.join('\n');
}

/** `help --json`: the declarations themselves, for tools. */
export function programJson(p: Program): object {
  const opts = (o: Options): object[] =>
    Object.entries(o)
      .filter(([, s]) => !s.hidden)
      .map(([name, s]) => ({ name, ...s }));
  return {
    name: p.name,
    version: p.version,
    summary: p.summary,
    global_options: opts(p.globalOptions),
    commands: p.commands.map((c) => ({ name: c.name, summary: c.summary, synopsis: synopsis(c, p.name), description: c.description ?? null, options: opts(c.options) })),
  };
}
