/** `shmpipe sidecar-stats`: the sidecar's STATS document (this session and the whole sidecar). */

import type { Command } from '../command';
import { openSession } from '../session';

export const sidecarStats: Command = {
  name: 'sidecar-stats',
  summary: 'print the sidecar statistics (slots, sessions, requests by op, errors)',
  options: {},
  async run(ctx) {
    const s = await openSession({ sidecar: ctx.global.sidecar, verbose: ctx.global.verbose });
    try {
      const st = await s.client.stats();
      if (ctx.global.json) {
        ctx.out(JSON.stringify(st));
      } else {
        const g = st.global;
        ctx.out(`sidecar: ${g.clients} client(s) connected, ${g.sessions_opened} session(s) opened, ${g.sessions_closed} closed`);
        ctx.out(`requests: ${g.requests_total} total; slots reclaimed from ended sessions: ${g.slots_reclaimed_total}`);
        const ops = Object.entries(g.requests_by_op).filter(([, n]) => n > 0);
        if (ops.length) ctx.out(`by op: ${ops.map(([k, n]) => `${k} ${n}`).join(', ')}`);
        const errs = Object.entries(g.errors_by_code).filter(([, n]) => n > 0);
        ctx.out(`errors: ${errs.length ? errs.map(([k, n]) => `${k} ${n}`).join(', ') : 'none'}`);
      }
      return 0;
    } finally {
      await s.close();
    }
  },
};
