// SPDX-License-Identifier: MIT
// A uPlot line chart that follows its container's width (1280 px desktop or a 375 px phone).
import { h } from 'preact';
import { useEffect, useRef } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

const html = htm.bind(h);
const COLORS = ['#1f5fa8', '#b3541e'];

// series: [{label, values, scale?, fmt?}], x: unix seconds.
export function Chart({ title, x, series, summary }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current || x.length === 0) return undefined;
    const width = () => Math.max(260, box.current.clientWidth - 8);
    const scales = {};
    const axes = [{}];
    series.forEach((s, i) => {
      const scale = s.scale || 'y';
      if (!scales[scale]) {
        scales[scale] = {};
        axes.push({ scale, side: axes.length === 1 ? 3 : 1, size: 70,
          values: (u, v) => v.map((n) => (s.fmt ? s.fmt(n) : n)), grid: { show: i === 0 } });
      }
    });
    const opts = {
      width: width(), height: 200, scales: { x: { time: true }, ...scales }, axes,
      series: [{}, ...series.map((s, i) => ({ label: s.label, scale: s.scale || 'y',
        stroke: COLORS[i % COLORS.length], width: 2, points: { show: true, size: 6 },
        value: (u, v) => (v === null || v === undefined ? '—' : (s.fmt ? s.fmt(v) : v)) }))],
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)], box.current);
    const onResize = () => plot.setSize({ width: width(), height: 200 });
    addEventListener('resize', onResize);
    return () => { removeEventListener('resize', onResize); plot.destroy(); };
  }, [x, series]);
  return html`<figure class="chart">
    <figcaption>${title}</figcaption>
    ${x.length === 0 ? html`<p>No data yet.</p>` : html`<div ref=${box} role="img" aria-label=${summary || title}></div>`}
  </figure>`;
}
