// SPDX-License-Identifier: MIT
// The dashboard: sign-in, the navigation and a hash router (#/vm/NAME, #/tasks/17, ...), so the
// daemon serves one static index.html and no path but / has to know about pages.
import { h, render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import htm from 'htm';
import './app.css';
import { ApiError, del, get, post, setCsrf } from './api.js';
import { Overview } from './overview.js';
import { VmPage } from './vm.js';
import { JobsPage } from './jobs.js';
import { TaskPage, TasksPage } from './tasks.js';
import { RepoPage, ReposPage } from './repo.js';
import { ReplicationPage } from './replica.js';

const html = htm.bind(h);

function useHash() {
  const [hash, setHash] = useState(location.hash || '#/');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function SignIn({ onSignedIn }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const s = await post('/session', { token: token.trim() });
      setToken('');
      onSignedIn(s);
    } catch (err) {
      setError(err instanceof ApiError && (err.status === 401 || err.status === 403)
        ? 'Sign-in refused: that token is not valid.' : `Sign-in failed: ${err.message}`);
    } finally {
      setBusy(false);
    }
  }
  return html`<main id="main" class="signin">
    <h1>vmshadow</h1>
    <form onSubmit=${submit} class="card">
      <h2>Sign in</h2>
      <label for="token">API token</label>
      <input id="token" type="password" autocomplete="current-password" required
        placeholder="NAME:SECRET" value=${token} onInput=${(e) => setToken(e.target.value)} />
      <p class="hint">A token from <code>vmshadow token create NAME --role audit|operator|admin</code>.</p>
      <button type="submit" disabled=${busy}>Sign in</button>
      ${error && html`<p role="alert" class="error">${error}</p>`}
    </form>
  </main>`;
}

function Nav({ session, hash, onSignOut }) {
  const items = [['#/', 'Overview'], ['#/jobs', 'Jobs'], ['#/tasks', 'Tasks'], ['#/repos', 'Repositories'],
    ['#/replication', 'Replication']];
  const current = (href) => (href === '#/' ? hash === '#/' || hash.startsWith('#/vm/')
    : hash.startsWith(href)) ? 'page' : undefined;
  return html`<header class="top">
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
    <span class="brand">vmshadow</span>
    <nav aria-label="Main">
      <ul>${items.map(([href, label]) => html`<li><a href=${href} aria-current=${current(href)}>${label}</a></li>`)}</ul>
    </nav>
    <span class="who">${session.name} (${session.role})</span>
    <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button>
  </header>`;
}

function Page({ hash, session }) {
  const path = hash.replace(/^#/, '') || '/';
  const m = (re) => path.match(re);
  let r;
  if ((r = m(/^\/vm\/(.+)$/))) return html`<${VmPage} name=${decodeURIComponent(r[1])} session=${session} />`;
  if (path === '/jobs') return html`<${JobsPage} session=${session} />`;
  if ((r = m(/^\/tasks\/(\d+)$/))) return html`<${TaskPage} id=${r[1]} session=${session} />`;
  if (path.startsWith('/tasks')) return html`<${TasksPage} session=${session} />`;
  if ((r = m(/^\/repos\/(.+)$/))) return html`<${RepoPage} name=${decodeURIComponent(r[1])} session=${session} />`;
  if (path === '/repos') return html`<${ReposPage} />`;
  if (path === '/replication') return html`<${ReplicationPage} session=${session} />`;
  return html`<${Overview} session=${session} />`;
}

function App() {
  const [session, setSession] = useState(undefined);
  const hash = useHash();
  useEffect(() => {
    get('/session').then((s) => {
      setCsrf(s.csrf || sessionStorage.getItem('vmshadow-csrf'));
      setSession(s);
    }).catch(() => setSession(null));
  }, []);
  useEffect(() => {
    const ended = () => { setCsrf(''); sessionStorage.removeItem('vmshadow-csrf'); setSession(null); };
    addEventListener('vmshadow-session-ended', ended);
    return () => removeEventListener('vmshadow-session-ended', ended);
  }, []);
  useEffect(() => {
    const m = document.getElementById('main');
    if (m) m.setAttribute('tabindex', '-1');
  });
  function signedIn(s) {
    setCsrf(s.csrf);
    sessionStorage.setItem('vmshadow-csrf', s.csrf || '');
    setSession(s);
  }
  async function signOut() {
    try { await del('/session'); } catch { /* the session is gone either way */ }
    setCsrf('');
    sessionStorage.removeItem('vmshadow-csrf');
    setSession(null);
    location.hash = '#/';
  }
  if (session === undefined) return html`<main id="main"><p>Loading…</p></main>`;
  if (!session) return html`<${SignIn} onSignedIn=${signedIn} />`;
  return html`<${Nav} session=${session} hash=${hash} onSignOut=${signOut} />
    <main id="main"><${Page} hash=${hash} session=${session} /></main>`;
}

render(html`<${App} />`, document.getElementById('app'));
