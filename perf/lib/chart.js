// A grouped horizontal bar chart as a self-contained SVG string (no dependency, no fonts beyond
// the viewer's sans-serif), for perf:report: one group per data set and phase, one bar per tool,
// each bar labelled with its value; each group scaled to its own largest bar, so a 100k-small-file
// restore and a 2 GiB restore are both readable. A missing value (tool not run, step failed) is
// drawn as "—".
//
//   chartSvg([{ title: '2 GiB mixed: backup', bars: [{ tool: 'shmpipe', value: 412 }, ...] }],
//            { title: 'Throughput, MB/s', unit: 'MB/s' })
'use strict';

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#7f7f7f'];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function chartSvg(groups, { title = '', unit = '' } = {}) {
  const tools = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.tool)))];
  const color = (t) => PALETTE[tools.indexOf(t) % PALETTE.length];
  const W = 860;
  const labelW = 150;
  const valueW = 90;
  const barH = 18;
  const gap = 4;
  const groupGap = 18;
  const left = 20;
  const top = 60;
  const plotW = W - left - labelW - valueW - 20;
  let y = top;
  const parts = [];
  for (const g of groups) {
    const max = Math.max(0, ...g.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0)));
    parts.push(`<text x="${left}" y="${y + 12}" font-weight="bold">${esc(g.title)}</text>`);
    y += 20;
    for (const b of g.bars) {
      const ok = Number.isFinite(b.value) && b.value !== null;
      const w = ok && max > 0 ? Math.max(1, (b.value / max) * plotW) : 0;
      parts.push(`<text x="${left + labelW - 6}" y="${y + barH - 5}" text-anchor="end">${esc(b.tool)}</text>`);
      if (ok) parts.push(`<rect x="${left + labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${color(b.tool)}"><title>${esc(`${b.tool}: ${b.value.toFixed(1)} ${unit}`)}</title></rect>`);
      parts.push(`<text x="${left + labelW + w + 6}" y="${y + barH - 5}">${ok ? esc(`${b.value >= 100 ? b.value.toFixed(0) : b.value.toFixed(1)} ${unit}`) : '—'}</text>`);
      y += barH + gap;
    }
    y += groupGap;
  }
  const H = y + 10;
  const legend = tools.map((t, i) => `<rect x="${left + i * 160}" y="32" width="12" height="12" fill="${color(t)}"/><text x="${left + i * 160 + 18}" y="43">${esc(t)}</text>`).join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>${legend}${parts.join('')}</svg>\n`
  );
}

module.exports = { chartSvg };
