// SPDX-License-Identifier: MIT
// Repositories: status and the prune simulator (what a retention would keep, point by point).
import { h } from 'preact';
import { useState } from 'preact/hooks';
import htm from 'htm';
import { get, post, q } from './api.js';
import { useLoad } from './hooks.js';
import { bytes, shortId, when } from './util.js';
import { ErrorLine, RepoSummary, Scroll, repoStatuses } from './overview.js';

const html = htm.bind(h);
const KEEPS = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'];

// Every repository of the daemon's config, whether a job uses it or not.
export async function listRepos() {
  const r = await get('/repos');
  return (r.repositories || []).map((x) => x.name).sort();
}

export function ReposPage() {
  const repos = useLoad(repoStatuses, [], 30000);
  return html`<h1>Repositories</h1><${ErrorLine} error=${repos.error} />
    ${repos.data && html`<${RepoSummary} repos=${repos.data} />`}`;
}

function Simulator({ name }) {
  const [keep, setKeep] = useState({ last: '', hourly: '', daily: '', weekly: '', monthly: '', yearly: '' });
  const [vm, setVm] = useState('');
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  async function simulate(e) {
    e.preventDefault();
    setError(null);
    const body = {};
    if (vm.trim()) body.vm = vm.trim();
    for (const k of KEEPS) if (String(keep[k]).trim() !== '') body[`keep_${k}`] = Number(keep[k]);
    // The result says which rules it is for: a later edit of the inputs does not relabel it.
    const rules = KEEPS.filter((k) => body[`keep_${k}`] !== undefined).map((k) => `keep-${k} ${body[`keep_${k}`]}`)
      .concat(body.vm ? [`VM ${body.vm}`] : []).join(', ') || 'no rules';
    setResult(null);
    try { setResult({ ...(await post(`/repos/${q(name)}/prune-preview`, body)), rules }); } catch (err) { setError(err); }
  }
  const points = (result && result.points) || [];
  const kept = points.filter((p) => p.keep).length;
  return html`<section aria-labelledby="h-sim"><h2 id="h-sim">Prune simulator</h2>
    <p class="hint">Nothing is removed here: this shows what <code>vmshadow prune</code> would do with these rules.</p>
    <form class="card sim" onSubmit=${simulate}>
      <div class="field"><label for="sim-vm">VM (empty: every VM)</label>
        <input id="sim-vm" value=${vm} onInput=${(e) => setVm(e.target.value)} /></div>
      ${KEEPS.map((k) => html`<div class="field"><label for=${`sim-keep-${k}`}>Keep ${k}</label>
        <input id=${`sim-keep-${k}`} type="number" min="1" inputmode="numeric" value=${keep[k]}
          onInput=${(e) => setKeep({ ...keep, [k]: e.target.value })} /></div>`)}
      <button type="submit">Simulate</button>
    </form>
    <${ErrorLine} error=${error} />
    ${result && html`<p role="status">${kept} of ${points.length} points kept, ${points.length - kept} removed.</p>
      <${Scroll} label="Prune simulation"><table class="sim-result">
      <caption>Prune simulation for ${result.rules}, point by point</caption>
      <thead><tr><th scope="col">Point</th><th scope="col">VM</th><th scope="col">Time</th><th scope="col">Verdict</th><th scope="col">Why</th></tr></thead>
      <tbody>${points.map((p) => html`<tr data-point=${p.id} data-keep=${p.keep ? 'keep' : 'remove'} class=${p.keep ? 'kept' : 'removed'}>
        <th scope="row"><code>${shortId(p.id)}</code></th><td>${p.vm}</td><td>${when(p.time)}</td>
        <td>${p.keep ? 'kept' : 'removed'}</td><td>${(p.reasons || []).join(', ') || '—'}</td></tr>`)}</tbody>
      </table><//>`}
  </section>`;
}

export function RepoPage({ name }) {
  const st = useLoad(() => get(`/repos/${q(name)}/status`), [name], 30000);
  const s = st.data;
  return html`<h1>Repository ${name}</h1><${ErrorLine} error=${st.error} />
    ${s && html`<dl class="facts">
      <dt>Path</dt><dd>${s.path || '—'}</dd><dt>Encrypted</dt><dd>${s.encrypted ? 'yes' : 'no'}</dd>
      <dt>Size on disk</dt><dd>${bytes(s.size)}</dd><dt>Deduplicated size</dt><dd>${bytes(s.stored_size ?? s.deduplicated_size)}</dd>
      <dt>Logical size</dt><dd>${bytes(s.logical_size)}</dd>
      <dt>Dedup ratio</dt><dd>${s.dedup_ratio ? `${Number(s.dedup_ratio).toFixed(2)}×` : '—'}</dd>
      <dt>Chunks</dt><dd>${s.chunks ?? '—'}</dd><dt>Points</dt><dd>${s.points ?? '—'}</dd>
      <dt>Last check</dt><dd>${when(s.last_check)}</dd><dt>Last gc</dt><dd>${when(s.last_gc)}</dd></dl>`}
    <${Simulator} name=${name} />`;
}
