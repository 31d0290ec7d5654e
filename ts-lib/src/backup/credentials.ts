/**
 * Where the CLI's backup commands get the repository and its password.
 *
 * Repository: `--repo URL`, else `SHMPIPE_REPO`, else the embedded default — a local directory,
 * `$XDG_DATA_HOME/shmpipe/repo` (`~/.local/share/shmpipe/repo` when XDG_DATA_HOME is unset), as
 * a `file://` URL, so a first backup needs no server. A plain path is turned into a `file://`
 * URL (relative paths against the working directory).
 *
 * Password, first that applies: `--password-file FILE` (its first line), `SHMPIPE_PASSWORD`,
 * a prompt on the terminal without echo (twice for `init`). No terminal and none of these: a
 * clear error rather than a hang.
 */

import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export function defaultRepoDir(env: NodeJS.ProcessEnv = process.env): string {
  const data = env.XDG_DATA_HOME && path.isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : path.join(os.homedir(), '.local', 'share');
  return path.join(data, 'shmpipe', 'repo');
}

/** The repository URL (see the module comment). */
export function resolveRepo(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const given = flag || env.SHMPIPE_REPO || '';
  if (given === '') return pathToFileURL(defaultRepoDir(env)).href;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(given)) return given;
  return pathToFileURL(path.resolve(given)).href;
}

export class PasswordError extends Error {}

export interface PasswordSources {
  passwordFile?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** The terminal to prompt on; `null`: none. */
  tty?: { input: NodeJS.ReadStream; output: NodeJS.WriteStream } | null;
  /** Ask twice and compare (creating a repository). */
  confirm?: boolean;
}

/** Reads one line from a TTY with echo off. */
async function prompt(tty: { input: NodeJS.ReadStream; output: NodeJS.WriteStream }, question: string): Promise<string> {
  const { input, output } = tty;
  output.write(question);
  input.setRawMode(true);
  input.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let text = '';
      const onData = (chunk: Buffer) => {
        for (const ch of chunk.toString('utf8')) {
          if (ch === '\r' || ch === '\n') {
            input.off('data', onData);
            resolve(text);
            return;
          }
          if (ch === '\u0003') {
            input.off('data', onData);
            reject(new PasswordError('interrupted'));
            return;
          }
          if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
          else text += ch;
        }
      };
      input.on('data', onData);
    });
  } finally {
    input.setRawMode(false);
    input.pause();
    output.write('\n');
  }
}

export async function resolvePassword(o: PasswordSources): Promise<string> {
  const env = o.env ?? process.env;
  if (o.passwordFile) {
    let text: string;
    try {
      text = await fsp.readFile(o.passwordFile, 'utf8');
    } catch (e) {
      throw new PasswordError(`cannot read the password file ${o.passwordFile}: ${(e as Error).message}`);
    }
    const line = text.split(/\r?\n/)[0] ?? '';
    if (line === '') throw new PasswordError(`the password file ${o.passwordFile} is empty`);
    return line;
  }
  if (env.SHMPIPE_PASSWORD) return env.SHMPIPE_PASSWORD;
  const tty = o.tty === undefined ? (process.stdin.isTTY && process.stderr.isTTY ? { input: process.stdin, output: process.stderr } : null) : o.tty;
  if (!tty) throw new PasswordError('no password: set SHMPIPE_PASSWORD, pass --password-file FILE, or run on a terminal to be asked');
  const pw = await prompt(tty, 'repository password: ');
  if (pw === '') throw new PasswordError('an empty password is not allowed');
  if (o.confirm && (await prompt(tty, 'repeat the password: ')) !== pw) throw new PasswordError('the passwords do not match');
  return pw;
}
