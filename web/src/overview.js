// SPDX-License-Identifier: MIT
// Overview: every VM's protection, the failures of the last 24 h, the repositories' usage.
import { h } from 'preact';
import htm from 'htm';
import { get, q } from './api.js';
import { useLoad } from './hooks.js';
import { age, bytes, protectionLevel, when } from './util.js';
import { listRepos } from './repo.js';

const html = htm.bind(h);

export function Badge({ protection }) {
  const p = protectionLevel(protection);
  return html`<span class=${`badge ${p.level}`}>${p.text}</span>`;
}

export function ErrorLine({ error }) {
  return error ? html`<p role="alert" class="error">${error.message}</p>` : null;
}

export function Scroll({ label, children }) {
  // A focusable region so a keyboard user can scroll a wide table on a phone.
  return html`<div class="scroll" role="region" aria-label=${label} tabindex="0">${children}</div>`;
}

function VmTable({ vms }) {
  if (!vms.length) return html`<p>No VMs on this host.</p>`;
  return html`<${Scroll} label="VM table"><table>
    <caption>VMs and their protection</caption>
    <thead><tr><th scope="col">VM</th><th scope="col">Protection</th><th scope="col">State</th>
      <th scope="col">Consistency</th><th scope="col">Last backup</th><th scope="col">Age</th>
      <th scope="col">Next run</th><th scope="col">Jobs</th></tr></thead>
    <tbody>${vms.map((v) => html`<tr data-vm=${v.name}>
      <th scope="row"><a href=${`#/vm/${q(v.name)}`}>${v.name}</a></th>
      <td><${Badge} protection=${v.protection} /></td>
      <td>${v.state || '—'}</td>
      <td>${v.consistency || '—'}</td>
      <td>${when(v.last_backup)}</td>
      <td>${age(v.age_s)}</td>
      <td>${when(v.next_run)}</td>
      <td>${(v.jobs || []).join(', ') || '—'}</td>
    </tr>`)}</tbody>
  </table><//>`;
}

function FailedTasks({ tasks }) {
  const since = Date.now() / 1000 - 86400;
  const recent = tasks.filter((t) => t.state === 'failed' && (t.ended_at || t.queued_at || 0) >= since);
  if (!recent.length) return html`<p>No failed tasks in the last 24 hours.</p>`;
  return html`<${Scroll} label="Failed task table"><table>
    <caption>Failed tasks of the last 24 hours</caption>
    <thead><tr><th scope="col">Task</th><th scope="col">Kind</th><th scope="col">Target</th>
      <th scope="col">Ended</th><th scope="col">Error</th></tr></thead>
    <tbody>${recent.map((t) => html`<tr>
      <th scope="row"><a href=${`#/tasks/${t.id}`}>#${t.id}</a></th><td>${t.kind}</td>
      <td>${t.target || '—'}</td><td>${when(t.ended_at)}</td><td>${t.error || '—'}</td></tr>`)}</tbody>
  </table><//>`;
}

export function RepoSummary({ repos }) {
  if (!repos.length) return html`<p>No repository is configured.</p>`;
  return html`<div class="cards">${repos.map((r) => html`<section class="card" aria-label=${`Repository ${r.name}`}>
    <h3><a href=${`#/repos/${q(r.name)}`}>${r.name}</a></h3>
    ${r.error ? html`<p class="error">${r.error}</p>` : html`<dl>
      <dt>Stored</dt><dd>${bytes(r.stored_size ?? r.size)}</dd>
      <dt>Logical</dt><dd>${bytes(r.logical_size)}</dd>
      <dt>Dedup ratio</dt><dd>${r.dedup_ratio ? `${Number(r.dedup_ratio).toFixed(2)}×` : '—'}</dd>
      <dt>Points</dt><dd>${r.points ?? '—'}</dd></dl>`}
  </section>`)}</div>`;
}

export async function repoStatuses() {
  const names = await listRepos();
  return Promise.all(names.map((n) => get(`/repos/${q(n)}/status`)
    .catch((e) => ({ name: n, error: e.message }))));
}

export function Overview() {
  const vms = useLoad(() => get('/vms'), [], 10000);
  const failed = useLoad(() => get('/tasks?state=failed&limit=100'), [], 10000);
  const repos = useLoad(repoStatuses, [], 30000);
  return html`<h1>Overview</h1>
    <section aria-labelledby="h-vms"><h2 id="h-vms">VMs</h2>
      <${ErrorLine} error=${vms.error} />
      ${vms.data && html`<${VmTable} vms=${vms.data} />`}</section>
    <section aria-labelledby="h-failed"><h2 id="h-failed">Failed tasks (24 h)</h2>
      <${ErrorLine} error=${failed.error} />
      ${failed.data && html`<${FailedTasks} tasks=${failed.data.tasks || []} />`}</section>
    <section aria-labelledby="h-repos"><h2 id="h-repos">Repositories</h2>
      <${ErrorLine} error=${repos.error} />
      ${repos.data && html`<${RepoSummary} repos=${repos.data} />`}</section>`;
}
