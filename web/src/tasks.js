// SPDX-License-Identifier: MIT
// Tasks: the live list (polled every 2 s) and one task whose log follows while it runs.
import { h } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { del, get } from './api.js';
import { useLoad } from './hooks.js';
import { age, may, when } from './util.js';
import { ErrorLine, Scroll } from './overview.js';

const html = htm.bind(h);
const STATES = ['', 'queued', 'running', 'ok', 'failed', 'cancelled', 'interrupted'];
const live = (s) => s === 'queued' || s === 'running';
const duration = (t) => (t.started_at ? age((t.ended_at || Date.now() / 1000) - t.started_at) : '—');

export function StateBadge({ state }) {
  return html`<span class=${`badge state-${state}`}>${state}</span>`;
}

export function TasksPage() {
  const [state, setState] = useState('');
  const tasks = useLoad(() => get(`/tasks?limit=100${state ? `&state=${state}` : ''}`), [state], 2000);
  const list = (tasks.data && tasks.data.tasks) || [];
  return html`<h1>Tasks</h1>
    <div class="field inline"><label for="task-state">State</label>
      <select id="task-state" value=${state} onChange=${(e) => setState(e.target.value)}>
        ${STATES.map((s) => html`<option value=${s}>${s || 'any'}</option>`)}</select></div>
    <${ErrorLine} error=${tasks.error} />
    ${list.length === 0 ? html`<p>No tasks.</p>` : html`<${Scroll} label="Tasks"><table>
      <caption>Tasks, newest first (updated every 2 s)</caption>
      <thead><tr><th scope="col">Task</th><th scope="col">State</th><th scope="col">Kind</th><th scope="col">Job</th>
        <th scope="col">Target</th><th scope="col">Trigger</th><th scope="col">Started</th><th scope="col">Duration</th></tr></thead>
      <tbody>${list.map((t) => html`<tr data-task=${t.id}>
        <th scope="row"><a href=${`#/tasks/${t.id}`}>#${t.id}</a></th><td><${StateBadge} state=${t.state} /></td>
        <td>${t.kind}</td><td>${t.job || '—'}</td><td>${t.target || '—'}</td><td>${t.trigger || '—'}</td>
        <td>${when(t.started_at)}</td><td>${duration(t)}</td></tr>`)}</tbody></table><//>`}`;
}

function Log({ id, running }) {
  const [lines, setLines] = useState([]);
  const [done, setDone] = useState(false);
  const next = useRef(1);
  useEffect(() => {
    let stop = false;
    let timer = null;
    next.current = 1;
    setLines([]);
    setDone(false);
    async function poll() {
      try {
        const r = await get(`/tasks/${id}/log?start=${next.current}`);
        if (stop) return;
        if (r.lines.length) setLines((old) => [...old, ...r.lines]);
        next.current = r.next;
        if (r.done) { setDone(true); return; }
        timer = setTimeout(poll, r.lines.length ? 200 : 1000);
      } catch {
        if (!stop) timer = setTimeout(poll, 2000);
      }
    }
    poll();
    return () => { stop = true; clearTimeout(timer); };
  }, [id]);
  return html`<section aria-labelledby="h-log"><h2 id="h-log">Log${done ? '' : running ? ' (following)' : ''}</h2>
    <${Scroll} label="Task log"><ol class="log" aria-live="polite">${lines.map((l) => html`<li class=${`lvl-${l.level}`}>
      <span class="t">${when(l.time)}</span> <span class="lvl">${l.level}</span> ${l.text}</li>`)}</ol><//></section>`;
}

export function TaskPage({ id, session }) {
  const task = useLoad(() => get(`/tasks/${id}`), [id], 2000);
  const [error, setError] = useState(null);
  const t = task.data;
  async function abort() {
    setError(null);
    try { await del(`/tasks/${id}`); task.reload(); } catch (e) { setError(e); }
  }
  return html`<h1>Task #${id}</h1>
    <${ErrorLine} error=${task.error || error} />
    ${t && html`<dl class="facts">
      <dt>State</dt><dd data-testid="task-state"><${StateBadge} state=${t.state} /></dd>
      <dt>Kind</dt><dd>${t.kind}</dd><dt>Job</dt><dd>${t.job || '—'}</dd>
      <dt>Target</dt><dd>${t.target || '—'}</dd><dt>Trigger</dt><dd>${t.trigger || '—'}</dd>
      <dt>Queued</dt><dd>${when(t.queued_at)}</dd><dt>Started</dt><dd>${when(t.started_at)}</dd>
      <dt>Ended</dt><dd>${when(t.ended_at)}</dd><dt>Duration</dt><dd>${duration(t)}</dd>
      ${t.progress && t.progress.phase && html`<dt>Progress</dt><dd>${t.progress.phase}${t.progress.item ? ` ${t.progress.item}` : ''}</dd>`}
      ${t.error && html`<dt>Error</dt><dd class="error">${t.error}${t.error_kind ? ` (${t.error_kind})` : ''}</dd>`}
    </dl>`}
    ${t && live(t.state) && may(session, 'operator') && html`<p><button type="button" class="danger" onClick=${abort}>Abort task</button></p>`}
    <${Log} id=${id} running=${t && live(t.state)} />`;
}
