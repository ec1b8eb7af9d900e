// SPDX-License-Identifier: MIT
// Replication: every VM this host replicates (primary) or keeps ready (replica), its health
// and RPO, and the actions an operator takes on it (docs/REPLICA.md).
import { h } from 'preact';
import { useState } from 'preact/hooks';
import htm from 'htm';
import { get, post, q } from './api.js';
import { useLoad } from './hooks.js';
import { age, bytes, may, when } from './util.js';
import { ErrorLine, Scroll } from './overview.js';

const html = htm.bind(h);

// The API's replica states as badge levels (the text stays the state's own name).
const LEVELS = {
  normal: 'ok',
  warning: 'warning',
  'resync-required': 'warning',
  initial: 'warning',
  critical: 'failing',
};

export function ReplicaBadge({ state }) {
  return html`<span class=${`badge ${LEVELS[state] || 'unprotected'}`}>${state || 'unknown'}</span>`;
}

const seconds = (s) => (typeof s === 'number' ? (s < 10 ? `${s.toFixed(1)} s` : age(s)) : '—');
const key = (r) => `${r.role}:${r.vm}`;

function FailoverDialog({ replica, onDone, onCancel }) {
  const pts = useLoad(() => get(`/replicas/${q(replica.vm)}/points`), [replica.vm]);
  const [point, setPoint] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const points = (pts.data && pts.data.points) || [];
  async function failover() {
    setBusy(true);
    setError(null);
    try {
      onDone(await post(`/replicas/${q(replica.vm)}/failover`, point === '' ? {} : { point: Number(point) }));
    } catch (err) { setError(err); } finally { setBusy(false); }
  }
  return html`<div class="card confirm" role="alertdialog" aria-labelledby="fo-title" aria-describedby="fo-text">
    <h3 id="fo-title">Fail over ${replica.vm} to this host?</h3>
    <p id="fo-text">VM <strong>${replica.vm}</strong> starts here from the recovery point chosen below.
      What the primary (${replica.peer || 'unknown'}) wrote after that point is lost, and replication
      from it ends. Use this when the primary is lost; for a planned move, run a planned failover on the primary.</p>
    <label for="fo-point">Recovery point</label>
    <select id="fo-point" value=${point} onChange=${(e) => setPoint(e.target.value)}>
      <option value="">the latest</option>
      ${[...points].reverse().map((p) => html`<option value=${String(p.seq)}>#${p.seq} · ${when(p.time)} · ${p.consistency || '—'}</option>`)}
    </select>
    <${ErrorLine} error=${pts.error || error} />
    <div><button type="button" class="danger" disabled=${busy} onClick=${failover}>Fail over ${replica.vm}</button>
    <button type="button" class="secondary" onClick=${onCancel}>Cancel</button></div>
  </div>`;
}

function RowActions({ replica, onAction, onFailover }) {
  const s = replica.state;
  const vm = replica.vm;
  const buttons = [];
  // Cycles are sent by the primary: it is paused and resumed there; failovers happen on the replica host.
  if (replica.role === 'primary') buttons.push(s === 'paused' ? ['resume', 'Resume'] : ['pause', 'Pause']);
  if (replica.role === 'replica') {
    if (s === 'test-failover') buttons.push(['stop-test', 'Stop test']);
    else if (s !== 'failed-over') buttons.push(['test-failover', 'Test failover']);
  }
  return html`<span class="rowactions">
    ${buttons.map(([action, label]) => html`<button type="button" class="secondary"
      aria-label=${`${label} ${vm}`} onClick=${() => onAction(replica, action)}>${label}</button>`)}
    ${replica.role === 'replica' && s !== 'failed-over' && html`<button type="button" class="danger"
      aria-label=${`Fail over ${vm}…`} onClick=${() => onFailover(replica)}>Fail over…</button>`}
  </span>`;
}

function ReplicaTable({ replicas, session, onAction, onFailover }) {
  const act = may(session, 'operator');
  return html`<${Scroll} label="Replication table"><table class="replicas">
    <caption>Replicated VMs and their health</caption>
    <thead><tr><th scope="col">VM</th><th scope="col">Role and peer</th>
      <th scope="col">State</th><th scope="col">RPO</th><th scope="col">Last cycle</th>
      <th scope="col">Avg / max cycle</th><th scope="col">Sent</th><th scope="col">Missed</th>
      <th scope="col">Points</th>${act && html`<th scope="col">Actions</th>`}</tr></thead>
    <tbody>${replicas.map((r) => html`<tr data-replica=${key(r)}>
      <th scope="row">${r.vm}</th><td>${r.role || '—'}<span class="hint peer">${r.role === 'replica' ? 'from' : 'to'} ${r.peer || '—'}</span></td>
      <td><${ReplicaBadge} state=${r.state} />${(r.reason || r.last_error) && html`<span class="hint reason">${r.reason || r.last_error}</span>`}</td>
      <td>${seconds(r.rpo_s)}</td><td>${when(r.last_cycle)}</td>
      <td>${seconds(r.avg_cycle_s)} / ${seconds(r.max_cycle_s)}</td>
      <td>${bytes(r.bytes_sent)}</td><td>${r.missed_cycles ?? '—'}</td><td>${r.points ?? '—'}</td>
      ${act && html`<td><${RowActions} replica=${r} onAction=${onAction} onFailover=${onFailover} /></td>`}
    </tr>`)}</tbody>
  </table><//>`;
}

function Empty() {
  const enable = 'vmshadow replica enable VM --to HOST:PORT --interval 5m';
  return html`<div class="card empty">
    <p><strong>No replication configured</strong> on this host.</p>
    <p class="hint">To keep a VM ready on a second host: give both daemons a ${html`<code>[replica]</code>`} section
      (a host certificate from ${html`<code>vmshadow cert</code>`}, the CA and, on the replica host, a listener
      and an allow list), then run ${html`<code>${enable}</code>`} on the primary. See docs/REPLICA.md.</p>
  </div>`;
}

export function ReplicationPage({ session }) {
  const list = useLoad(() => get('/replicas'), [], 10000);
  const [failover, setFailover] = useState(null);
  const [done, setDone] = useState(null);
  const [error, setError] = useState(null);
  const replicas = (list.data && list.data.replicas) || [];
  const finished = (what, r) => {
    setDone(r && r.task ? html`${what}: <a href=${`#/tasks/${r.task}`}>task #${r.task}</a> started.` : html`${what}: done.`);
    list.reload();
  };
  async function onAction(replica, action) {
    setError(null);
    setDone(null);
    try { finished(`${action} ${replica.vm}`, await post(`/replicas/${q(replica.vm)}/${action}`, {})); } catch (err) { setError(err); }
  }
  return html`<h1>Replication</h1>
    <${ErrorLine} error=${list.error || error} />
    ${done && html`<p role="status">${done}</p>`}
    ${list.data && (replicas.length ? html`<${ReplicaTable} replicas=${replicas} session=${session}
      onAction=${onAction} onFailover=${(r) => { setError(null); setDone(null); setFailover(r); }} />` : html`<${Empty} />`)}
    ${failover && html`<${FailoverDialog} replica=${failover} onCancel=${() => setFailover(null)}
      onDone=${(r) => { const vm = failover.vm; setFailover(null); finished(`failover ${vm}`, r); }} />`}`;
}
