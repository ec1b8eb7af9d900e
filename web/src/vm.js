// SPDX-License-Identifier: MIT
// A VM: its restore points (timeline, list, charts) and what can be done with them.
import { h } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import htm from 'htm';
import { del, get, post, q } from './api.js';
import { useLoad } from './hooks.js';
import { bytes, may, shortId, unixOf, when } from './util.js';
import { Chart } from './chart.js';
import { Badge, ErrorLine, Scroll } from './overview.js';

const html = htm.bind(h);
// The API's "ok" | "failed" | null (the point's newest boot verification).
const verifiedText = (v) => (v === 'ok' || v === true ? 'yes' : v === 'failed' || v === false ? 'FAILED' : 'not yet');

function Timeline({ points }) {
  if (points.length === 0) return null;
  const ts = points.map((p) => unixOf(p.time));
  const lo = Math.min(...ts);
  const span = Math.max(1, Math.max(...ts) - lo);
  return html`<div class="timeline" role="list" aria-label="Restore points on a timeline">
    ${points.map((p, i) => html`<span role="listitem" class=${`tick ${p.consistency}`}
      style=${`left:${points.length === 1 ? 50 : ((ts[i] - lo) / span) * 100}%`}
      title=${`${when(p.time)} ${p.consistency}`}><span class="sr">${when(p.time)}, ${p.consistency}</span></span>`)}
  </div>
  <p class="legend"><span class="tick application"></span> application <span class="tick image"></span> image
    <span class="tick crash"></span> crash <span class="tick offline"></span> offline</p>`;
}

function PointList({ points, selected, onSelect }) {
  if (points.length === 0) return html`<p>No restore points yet.</p>`;
  return html`<${Scroll} label="Restore points"><table class="points">
    <caption>Restore points, newest first</caption>
    <thead><tr><th scope="col">Select</th><th scope="col">Time</th><th scope="col">Point</th>
      <th scope="col">Consistency</th><th scope="col">Freeze window</th><th scope="col">Bytes added</th>
      <th scope="col">Verified</th><th scope="col">Repository</th></tr></thead>
    <tbody>${points.map((p) => html`<tr data-point=${p.id}>
      <td><input type="radio" name="point" id=${`pt-${p.id}`} checked=${selected === p.id}
        aria-label=${`Select point ${when(p.time)}`} onChange=${() => onSelect(p.id)} /></td>
      <th scope="row"><label for=${`pt-${p.id}`}>${when(p.time)}</label></th>
      <td><code>${shortId(p.id)}</code></td><td>${p.consistency || '—'}</td>
      <td>${p.freeze_ms === null || p.freeze_ms === undefined ? '—' : `${p.freeze_ms} ms`}</td>
      <td>${bytes(p.bytes_added)}</td><td>${verifiedText(p.verified)}</td><td>${p.repository || '—'}</td>
    </tr>`)}</tbody></table><//>`;
}

function Started({ task }) {
  return task ? html`<p role="status">Started <a href=${`#/tasks/${task}`}>task #${task}</a>.</p>` : null;
}

function Actions({ vm, point, session, onChanged }) {
  const [method, setMethod] = useState('auto');
  const [asName, setAsName] = useState(`${vm}-restored`);
  const [confirm, setConfirm] = useState(null);
  const [task, setTask] = useState(null);
  const [error, setError] = useState(null);
  const run = (fn) => async (e) => {
    e?.preventDefault();
    setError(null);
    try {
      const r = await fn();
      if (r && r.task) setTask(r.task);
      setConfirm(null);
      onChanged();
    } catch (err) { setError(err); }
  };
  if (!may(session, 'operator')) return html`<p>Your role (${session.role}) may look but not act.</p>`;
  const pointArgs = point ? { point: point.id, repository: point.repository } : { vm };
  return html`<div class="actions">
    <form class="card" onSubmit=${run(() => post('/backup', { vm, method }))}>
      <h3>Back up now</h3>
      <label for="method">Method</label>
      <select id="method" value=${method} onChange=${(e) => setMethod(e.target.value)}>
        ${['auto', 'application', 'image', 'crash'].map((m) => html`<option value=${m}>${m}</option>`)}
      </select>
      <button type="submit">Back up now</button>
    </form>
    <div class="card">
      <h3>Selected point</h3>
      <p>${point ? html`${when(point.time)} <code>${shortId(point.id)}</code>` : 'none (the latest is used)'}</p>
      <button type="button" onClick=${run(() => post('/verify', { ...pointArgs, vm: point ? undefined : vm, boot: true }))}>Verify with boot</button>
      <form onSubmit=${run(() => post('/restore', { ...pointArgs, as: asName }))}>
        <label for="as-name">New VM name</label>
        <input id="as-name" value=${asName} required onInput=${(e) => setAsName(e.target.value)} />
        <button type="submit">Restore as new VM</button>
      </form>
      <button type="button" class="danger" onClick=${() => setConfirm('replace')}>Restore in place…</button>
      ${point && html`<button type="button" class="danger" onClick=${() => setConfirm('forget')}>Forget point…</button>`}
    </div>
    ${confirm === 'replace' && html`<div class="card confirm" role="alertdialog" aria-labelledby="c-title" aria-describedby="c-text">
      <h3 id="c-title">Replace VM ${vm}?</h3>
      <p id="c-text">This stops VM <strong>${vm}</strong> and replaces all its disks with the point of
        ${point ? when(point.time) : 'its latest backup'}. Whatever was written since is lost.</p>
      <button type="button" class="danger" onClick=${run(() => post('/restore', { ...pointArgs, replace: true }))}>Replace ${vm}</button>
      <button type="button" class="secondary" onClick=${() => setConfirm(null)}>Cancel</button></div>`}
    ${confirm === 'forget' && point && html`<div class="card confirm" role="alertdialog" aria-labelledby="c-title" aria-describedby="c-text">
      <h3 id="c-title">Forget this point?</h3>
      <p id="c-text">The point of ${when(point.time)} (<code>${shortId(point.id)}</code>) is removed from
        repository ${point.repository}; its data goes at the next gc.</p>
      <button type="button" class="danger" onClick=${run(() => del(`/points/${q(point.id)}?repository=${q(point.repository)}`))}>Forget point</button>
      <button type="button" class="secondary" onClick=${() => setConfirm(null)}>Cancel</button></div>`}
    <${Started} task=${task} /><${ErrorLine} error=${error} />
  </div>`;
}

function Charts({ points, tasks }) {
  const series = useMemo(() => {
    const asc = [...points].sort((a, b) => unixOf(a.time) - unixOf(b.time));
    const backups = tasks.filter((t) => t.state === 'ok' && t.started_at && t.ended_at)
      .sort((a, b) => a.ended_at - b.ended_at);
    // A point's duration: its own duration_s, else that of the daemon's backup task that ran
    // when it was taken (else a gap in the line).
    const dur = asc.map((p) => {
      if (typeof p.duration_s === 'number') return Math.round(p.duration_s * 10) / 10;
      const at = unixOf(p.time);
      const t = backups.find((b) => b.started_at - 1 <= at && at <= b.ended_at + 1);
      return t ? t.ended_at - t.started_at : null;
    });
    return {
      x: asc.map((p) => unixOf(p.time)),
      added: [{ label: 'bytes added', values: asc.map((p) => p.bytes_added ?? null), fmt: bytes },
        { label: 'duration (s)', values: dur, scale: 's' }],
      freeze: [{ label: 'freeze window (ms)', values: asc.map((p) => p.freeze_ms ?? null) }],
    };
  }, [points, tasks]);
  return html`<div class="charts">
    <${Chart} title="Bytes added and duration per backup" x=${series.x} series=${series.added}
      summary=${`Bytes added and duration of ${series.x.length} backups`} />
    <${Chart} title="Freeze window over time" x=${series.x} series=${series.freeze}
      summary=${`Freeze window of ${series.x.length} backups, in milliseconds`} />
  </div>`;
}

export function VmPage({ name, session }) {
  const vms = useLoad(() => get('/vms'), [name], 10000);
  const pts = useLoad(() => get(`/points?vm=${q(name)}`), [name], 10000);
  const tasks = useLoad(() => get('/tasks?kind=backup&limit=200'), [name], 10000);
  const [selected, setSelected] = useState(null);
  const vm = (vms.data || []).find((v) => v.name === name);
  const points = [...((pts.data && pts.data.points) || [])].sort((a, b) => unixOf(b.time) - unixOf(a.time));
  const mine = ((tasks.data && tasks.data.tasks) || []).filter((t) => (t.target || '').split(/,\s*/).includes(name));
  const point = points.find((p) => p.id === selected) || null;
  const reload = () => { pts.reload(); vms.reload(); tasks.reload(); };
  return html`<h1>VM ${name}</h1>
    ${vm && html`<p>Protection <${Badge} protection=${vm.protection} /> · state ${vm.state || '—'} ·
      next run ${when(vm.next_run)} · jobs ${(vm.jobs || []).join(', ') || 'none'}</p>`}
    <${ErrorLine} error=${pts.error} />
    <section aria-labelledby="h-actions"><h2 id="h-actions">Actions</h2>
      <${Actions} vm=${name} point=${point} session=${session} onChanged=${reload} /></section>
    <section aria-labelledby="h-points"><h2 id="h-points">Restore points (${points.length})</h2>
      <${Timeline} points=${points} />
      <${PointList} points=${points} selected=${selected} onSelect=${setSelected} /></section>
    <section aria-labelledby="h-charts"><h2 id="h-charts">Charts</h2>
      <${Charts} points=${points} tasks=${mine} /></section>`;
}
