// SPDX-License-Identifier: MIT
// Jobs: the list, a create/edit form with the daemon's preview of the schedule, run, delete.
import { h } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';
import { del, get, post, put, q } from './api.js';
import { useLoad } from './hooks.js';
import { may, when } from './util.js';
import { ErrorLine, Scroll } from './overview.js';

const html = htm.bind(h);
const KEEPS = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'];
// What GET /jobs adds to a job's settings; an edit sends the settings only.
const STATUS_FIELDS = ['next_run', 'last_task', 'last_success'];
const EMPTY = { id: '', kind: 'backup', schedule: '', vms: '', repository: '', method: 'auto', notify: 'failure',
  enabled: true, keep_last: '', keep_hourly: '', keep_daily: '', keep_weekly: '', keep_monthly: '', keep_yearly: '' };

function SchedulePreview({ expr }) {
  const [state, setState] = useState(null);
  useEffect(() => {
    if (!expr.trim()) { setState(null); return undefined; }
    const t = setTimeout(() => {
      get(`/schedule/preview?expr=${q(expr.trim())}&count=5`)
        .then((r) => setState({ r }), (e) => setState({ e }));
    }, 300);
    return () => clearTimeout(t);
  }, [expr]);
  if (!state) return html`<p id="schedule-help" class="hint">Empty: runs only when asked. A systemd calendar event, e.g. <code>Mon..Fri 22:00</code>.</p>`;
  if (state.e) return html`<p id="schedule-help" class="error" role="alert">${state.e.message}</p>`;
  return html`<div id="schedule-help" aria-live="polite"><p class="hint">${state.r.normalized}: next runs</p>
    <ol class="preview" aria-label="Next 5 runs">${state.r.next.map((t) => html`<li>${when(t)}</li>`)}</ol></div>`;
}

function toForm(job) {
  const f = { ...EMPTY, ...job, vms: (job.vms || []).join(', ') };
  for (const k of KEEPS) f[`keep_${k}`] = job[`keep_${k}`] ?? '';
  return f;
}

function toJob(f, original) {
  // Keep what the form does not show (group, catch_up, after, ...) as the job had it.
  const kept = { ...(original || {}) };
  for (const k of STATUS_FIELDS) delete kept[k];
  const job = { ...kept, id: f.id.trim(), kind: f.kind, repository: f.repository.trim(),
    schedule: f.schedule.trim(), notify: f.notify, enabled: f.enabled };
  if (f.kind === 'backup' || f.kind === 'verify') job.vms = f.vms.split(',').map((s) => s.trim()).filter(Boolean);
  else delete job.vms;
  if (f.kind === 'backup') job.method = f.method; else delete job.method;
  for (const k of KEEPS) {
    const v = String(f[`keep_${k}`]).trim();
    if (v !== '' && (f.kind === 'backup' || f.kind === 'prune')) job[`keep_${k}`] = Number(v);
    else delete job[`keep_${k}`];
  }
  return job;
}

function JobForm({ original, digest, onDone, onCancel }) {
  const [f, setF] = useState(original ? toForm(original) : EMPTY);
  const [error, setError] = useState(null);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.type === 'checkbox' ? e.target.checked : e.target.value });
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try {
      const job = toJob(f, original);
      if (original) await put(`/jobs/${q(original.id)}`, { digest, job });
      else await post('/jobs', { digest, job });
      onDone();
    } catch (err) { setError(err); }
  }
  const field = (id, label, input) => html`<div class="field"><label for=${id}>${label}</label>${input}</div>`;
  return html`<form class="card jobform" onSubmit=${submit} aria-labelledby="jf-title">
    <h2 id="jf-title">${original ? `Edit job ${original.id}` : 'New job'}</h2>
    ${field('job-id', 'Job id', html`<input id="job-id" required pattern="[a-z0-9][a-z0-9_\\-]{0,62}" value=${f.id}
      disabled=${!!original} onInput=${set('id')} />`)}
    ${field('job-kind', 'Kind', html`<select id="job-kind" value=${f.kind} onChange=${set('kind')}>
      ${['backup', 'verify', 'prune', 'check'].map((k) => html`<option value=${k}>${k}</option>`)}</select>`)}
    ${field('job-schedule', 'Schedule', html`<input id="job-schedule" value=${f.schedule} aria-describedby="schedule-help"
      placeholder="Mon..Fri 22:00" onInput=${set('schedule')} />`)}
    <${SchedulePreview} expr=${f.schedule} />
    ${(f.kind === 'backup' || f.kind === 'verify') && field('job-vms', 'VMs (names or globs, comma-separated)',
      html`<input id="job-vms" required value=${f.vms} onInput=${set('vms')} />`)}
    ${field('job-repo', 'Repository', html`<input id="job-repo" required value=${f.repository} onInput=${set('repository')} />`)}
    ${f.kind === 'backup' && field('job-method', 'Method', html`<select id="job-method" value=${f.method} onChange=${set('method')}>
      ${['auto', 'application', 'image', 'crash'].map((m) => html`<option value=${m}>${m}</option>`)}</select>`)}
    ${(f.kind === 'backup' || f.kind === 'prune') && html`<fieldset><legend>Retention</legend>
      ${KEEPS.map((k) => field(`job-keep-${k}`, `Keep ${k}`, html`<input id=${`job-keep-${k}`} type="number" min="1"
        inputmode="numeric" value=${f[`keep_${k}`]} onInput=${set(`keep_${k}`)} />`))}</fieldset>`}
    ${field('job-notify', 'Notify', html`<select id="job-notify" value=${f.notify} onChange=${set('notify')}>
      ${['failure', 'always', 'never'].map((m) => html`<option value=${m}>${m}</option>`)}</select>`)}
    <div class="field check"><input id="job-enabled" type="checkbox" checked=${f.enabled} onChange=${set('enabled')} />
      <label for="job-enabled">Enabled</label></div>
    <button type="submit">${original ? 'Save job' : 'Create job'}</button>
    <button type="button" class="secondary" onClick=${onCancel}>Cancel</button>
    <${ErrorLine} error=${error} />
  </form>`;
}

export function JobsPage({ session }) {
  const jobs = useLoad(() => get('/jobs'), [], 15000);
  const [editing, setEditing] = useState(null); // null, 'new' or a job
  const [msg, setMsg] = useState(null);
  const [error, setError] = useState(null);
  const admin = may(session, 'admin');
  const operator = may(session, 'operator');
  const list = (jobs.data && jobs.data.jobs) || [];
  const act = (fn) => async () => {
    setError(null);
    try { setMsg(await fn()); jobs.reload(); } catch (e) { setError(e); }
  };
  const run = (j) => act(async () => {
    const r = await post(`/jobs/${q(j.id)}/run`);
    return html`Job ${j.id} started: <a href=${`#/tasks/${r.task}`}>task #${r.task}</a>.`;
  });
  const remove = (j) => act(async () => {
    if (!confirm(`Delete job ${j.id}? Its schedule stops; its points stay.`)) return null;
    await del(`/jobs/${q(j.id)}?digest=${q(jobs.data.digest)}`);
    return `Deleted job ${j.id}.`;
  });
  return html`<h1>Jobs</h1>
    <${ErrorLine} error=${jobs.error || error} />
    ${msg && html`<p role="status">${msg}</p>`}
    ${admin && !editing && html`<p><button type="button" onClick=${() => setEditing('new')}>New job</button></p>`}
    ${editing && html`<${JobForm} original=${editing === 'new' ? null : editing} digest=${jobs.data && jobs.data.digest}
      onCancel=${() => setEditing(null)} onDone=${() => { setEditing(null); setMsg('Job saved.'); jobs.reload(); }} />`}
    ${list.length === 0 ? html`<p>No jobs yet.</p>` : html`<${Scroll} label="Jobs"><table>
      <caption>Jobs</caption>
      <thead><tr><th scope="col">Job</th><th scope="col">Kind</th><th scope="col">Schedule</th><th scope="col">VMs</th>
        <th scope="col">Repository</th><th scope="col">Retention</th><th scope="col">Notify</th>
        <th scope="col">Next run</th><th scope="col">Last success</th>
        ${operator && html`<th scope="col">Actions</th>`}</tr></thead>
      <tbody>${list.map((j) => html`<tr data-job=${j.id}>
        <th scope="row">${j.id}${j.enabled === false ? ' (disabled)' : ''}</th><td>${j.kind}</td>
        <td>${j.schedule || 'when asked'}${j.after ? ` · after ${j.after}` : ''}</td><td>${(j.vms || []).join(', ') || '—'}</td>
        <td>${j.repository}</td>
        <td>${KEEPS.filter((k) => j[`keep_${k}`]).map((k) => `${k} ${j[`keep_${k}`]}`).join(', ') || '—'}</td>
        <td>${j.notify || 'failure'}</td><td>${when(j.next_run)}</td><td>${when(j.last_success)}</td>
        ${operator && html`<td class="rowactions">
          <button type="button" onClick=${run(j)} aria-label=${`Run job ${j.id} now`}>Run now</button>
          ${admin && html`<button type="button" class="secondary" onClick=${() => setEditing(j)} aria-label=${`Edit job ${j.id}`}>Edit</button>
          <button type="button" class="danger" onClick=${remove(j)} aria-label=${`Delete job ${j.id}`}>Delete</button>`}
        </td>`}
      </tr>`)}</tbody></table><//>`}`;
}
