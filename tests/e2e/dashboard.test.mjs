// SPDX-License-Identifier: MIT
// The dashboard in a real browser (Debian's chromium, driven by playwright-core) against the
// real vmshadowd run.sh started: the acceptance, axe-core on every page, screenshots.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set: run tests/e2e/run.sh`);
  return process.env[k];
};
const URL = env('E2E_URL');
const VM = env('E2E_VM');
const ADMIN = env('E2E_ADMIN_TOKEN');
const AUDIT = env('E2E_AUDIT_TOKEN');
const SHOTS = process.env.E2E_SHOTS || '';
const DESKTOP = { width: 1280, height: 800 };

let browser;
let admin; // the admin's signed-in page, shared by the tests in order

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-default-apps', '--disable-sync',
      '--no-first-run', '--metrics-recording-only', '--disable-domain-reliability'],
  });
  if (SHOTS) mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

// Errors the page itself reports (a script error, a Content-Security-Policy refusal) fail
// the test that made them.
const pageErrors = [];
async function newPage(viewport = DESKTOP) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Uncaught/.test(m.text())) pageErrors.push(m.text());
  });
  return page;
}

afterEach(() => {
  const errors = pageErrors.splice(0);
  assert.deepEqual(errors, [], 'the page reported errors');
});

// Polls `fn` in node (page.waitForFunction evaluates a string in the page, which the CSP
// refuses) until it returns true.
async function until(what, fn, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function shot(page, name) {
  if (!SHOTS) return;
  await page.waitForTimeout(300); // let charts and fonts settle
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

// axe-core in the page: no serious or critical violations. It is evaluated through the
// DevTools protocol: the daemon's Content-Security-Policy (rightly) refuses an inline script.
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
async function axe(page, what) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${what}: axe-core violations ${JSON.stringify(bad, null, 1)}`);
}

async function signIn(page, token) {
  await page.goto(URL);
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

const go = (page, hash) => page.goto(`${URL}#${hash}`);

test('a wrong token is refused', async () => {
  const page = await newPage();
  await signIn(page, 'e2e-admin:not-the-secret');
  await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor();
  assert.equal(await page.getByRole('navigation', { name: 'Main' }).count(), 0);
  await shot(page, 'sign-in');
  await axe(page, 'sign-in');
  await page.context().close();
});

test('sign-in with the admin token lists the guest on the overview', async () => {
  admin = await newPage();
  await signIn(admin, ADMIN);
  const row = admin.locator(`tr[data-vm="${VM}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /ok|warning|failing|unprotected/);
  await admin.getByRole('heading', { name: 'Repositories' }).waitFor();
  await admin.getByRole('region', { name: 'Repository main' }).waitFor();
  await shot(admin, 'overview');
  await axe(admin, 'overview');
});

test('every page fits a 375 px wide phone', async () => {
  await admin.setViewportSize({ width: 375, height: 800 });
  for (const [hash, ready] of [['/', `tr[data-vm="${VM}"]`], [`/vm/${encodeURIComponent(VM)}`, 'table.points'],
    ['/jobs', 'tr[data-job]'], ['/tasks', 'h1'], ['/repos/main', 'form.sim'],
    ['/replication', '.empty, table.replicas']]) {
    await go(admin, hash);
    await admin.locator(ready).first().waitFor();
    const width = await admin.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 376, `${hash} is ${width} px wide at 375 px`);
    if (hash === '/' && SHOTS) await admin.screenshot({ path: join(SHOTS, 'overview-375.png'), fullPage: true });
  }
  await admin.setViewportSize(DESKTOP);
  await go(admin, '/');
  await admin.locator(`tr[data-vm="${VM}"]`).waitFor();
});

test('back up now: the task log follows to ok and a new point appears', { timeout: 420000 }, async () => {
  await admin.locator(`a[href="#/vm/${encodeURIComponent(VM)}"]`).first().click();
  await admin.getByRole('heading', { name: `VM ${VM}` }).waitFor();
  const rows = admin.locator('table.points tbody tr');
  await rows.first().waitFor();
  const before = await rows.count();
  await admin.getByLabel('Method').selectOption('auto');
  await admin.getByRole('button', { name: 'Back up now' }).click();
  await admin.getByRole('status').getByRole('link', { name: /task #\d+/ }).click();
  await admin.getByRole('heading', { name: /^Task #\d+$/ }).waitFor();
  await admin.locator('[data-testid="task-state"]', { hasText: /^ok$/ }).waitFor({ timeout: 360000 });
  await admin.getByRole('heading', { name: 'Log', exact: true }).waitFor();
  const log = await admin.locator('ol.log li').allInnerTexts();
  assert.ok(log.length > 0, 'the log shows lines');
  assert.match(log[log.length - 1], /\bok\b/, 'the log follows to the task\'s end');
  await shot(admin, 'task');
  await axe(admin, 'task');
  await go(admin, `/vm/${encodeURIComponent(VM)}`);
  await until('the new point is listed', async () => (await rows.count()) === before + 1);
  await admin.locator('figure.chart canvas').first().waitFor();
  await shot(admin, 'vm');
  await admin.getByRole('heading', { name: 'Charts' }).scrollIntoViewIfNeeded();
  await shot(admin, 'vm-charts');
  await axe(admin, 'vm');
});

test('a new job with a schedule shows the next 5 runs', async () => {
  await go(admin, '/jobs');
  await admin.getByRole('button', { name: 'New job' }).click();
  await admin.getByLabel('Job id').fill('e2e-nightly');
  await admin.getByLabel('Schedule').fill('Mon..Fri 22:00');
  await admin.getByLabel(/^VMs/).fill(VM);
  await admin.getByLabel('Repository').fill('main');
  await admin.getByLabel('Keep daily').fill('7');
  const preview = admin.getByRole('list', { name: 'Next 5 runs' }).getByRole('listitem');
  await until('the preview shows 5 runs', async () => (await preview.count()) === 5);
  assert.equal(await preview.count(), 5);
  await shot(admin, 'jobs');
  await axe(admin, 'jobs (form)');
  await admin.getByRole('button', { name: 'Create job' }).click();
  await admin.locator('tr[data-job="e2e-nightly"]').waitFor();
  assert.match(await admin.locator('tr[data-job="e2e-nightly"]').innerText(), /Mon\.\.Fri 22:00/);
  // Edit it: the form starts from the job as it is, the daemon takes the change.
  await admin.getByRole('button', { name: 'Edit job e2e-nightly' }).click();
  assert.equal(await admin.getByLabel('Keep daily').inputValue(), '7');
  await admin.getByLabel('Schedule').fill('Sat,Sun 03:30');
  await until('the preview shows the new schedule', async () =>
    /Sat,Sun/.test((await admin.locator('#schedule-help').innerText()) || '') && (await preview.count()) === 5);
  await admin.getByRole('button', { name: 'Save job' }).click();
  await until('the job is changed', async () =>
    /Sat,Sun 03:30/.test(await admin.locator('tr[data-job="e2e-nightly"]').innerText()));
});

test('the jobs page works with the keyboard alone', async () => {
  await go(admin, '/jobs');
  await admin.locator('tr[data-job]').first().waitFor();
  // From the top of the page, Tab reaches "New job"; Enter opens the form with focusable fields.
  await admin.locator('body').focus();
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await admin.keyboard.press('Tab');
    reached = await admin.evaluate(() => document.activeElement?.textContent === 'New job');
  }
  assert.ok(reached, 'Tab reaches the New job button');
  await admin.keyboard.press('Enter');
  await admin.getByLabel('Job id').waitFor();
  await admin.keyboard.press('Tab');
  assert.equal(await admin.evaluate(() => document.activeElement?.id), 'job-id');
  await admin.getByRole('button', { name: 'Cancel' }).press('Enter');
  await admin.getByRole('button', { name: 'New job' }).waitFor();
});

test('the task list shows the backup', async () => {
  await go(admin, '/tasks');
  await admin.locator('tr[data-task]').first().waitFor();
  assert.match(await admin.locator('table').innerText(), /backup/);
  await shot(admin, 'tasks');
  await axe(admin, 'tasks');
});

// No [replica] section in run.sh's daemon: the page says so and how to set one up.
test('the replication page shows its empty state and the hint to enable one', async () => {
  await go(admin, '/replication');
  await admin.getByRole('heading', { name: 'Replication', level: 1 }).waitFor();
  const empty = admin.locator('.empty');
  await empty.getByText('No replication configured').waitFor();
  assert.match(await empty.innerText(), /vmshadow replica enable VM --to HOST:PORT/);
  assert.equal(await admin.locator('nav a[aria-current="page"]').innerText(), 'Replication');
  assert.equal(await admin.locator('table.replicas').count(), 0);
  await shot(admin, 'replication-empty');
  await axe(admin, 'replication');
});

// The populated page, with GET /replicas and the actions answered in the browser (run.sh's
// daemon has no second host): badges, the actions each role and state offers, the failover
// dialog naming what is lost and sending the chosen point, the CSRF header, and axe.
test('the replication table offers each replica its actions; failover asks first', async () => {
  const page = await newPage();
  const list = { replicas: [
    { vm: 'web1', role: 'primary', peer: 'hostb:8471', state: 'normal', rpo_s: 212,
      last_cycle: '2026-12-07T05:30:00Z', avg_cycle_s: 4.2, max_cycle_s: 19, bytes_sent: 3221225472,
      missed_cycles: 2, points: 5 },
    { vm: 'db1', role: 'replica', peer: 'CN=hosta', state: 'warning',
      reason: "30 % of the last hour's cycles were missed", rpo_s: 950, points: 3 },
    { vm: 'old', role: 'primary', peer: 'hostb:8471', state: 'paused', points: 2 }] };
  const posted = [];
  const json = (body, status = 200) => ({ status, contentType: 'application/json', body: JSON.stringify(body) });
  await page.route('**/api/v1/replicas', (r) => r.fulfill(json(list)));
  await page.route('**/api/v1/replicas/db1/points', (r) => r.fulfill(json({ vm: 'db1', points: [
    { seq: 0, time: '2026-12-07T05:00:00Z', consistency: 'crash' },
    { seq: 4, time: '2026-12-07T05:25:00Z', consistency: 'application' }] })));
  await page.route('**/api/v1/replicas/*/*', (r) => {
    if (r.request().method() !== 'POST') return r.fallback();
    posted.push([new globalThis.URL(r.request().url()).pathname, r.request().postData(),
      !!r.request().headers()['x-csrf-token']]);
    return r.fulfill(json({ task: 42 }, 202));
  });
  await signIn(page, ADMIN);
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
  await go(page, '/replication');
  const db1 = page.locator('tr[data-replica="replica:db1"]');
  await db1.waitFor();
  assert.match(await db1.innerText(), /warning[\s\S]*cycles were missed/);
  assert.equal(await page.getByRole('button', { name: 'Pause web1' }).count(), 1);
  assert.equal(await page.getByRole('button', { name: 'Resume old' }).count(), 1);
  assert.equal(await page.getByRole('button', { name: 'Test failover db1' }).count(), 1);
  assert.equal(await page.getByRole('button', { name: /Fail over web1/ }).count(), 0);
  await shot(page, 'replication');
  await axe(page, 'replication table');
  await page.getByRole('button', { name: 'Pause web1' }).click();
  await page.getByRole('status').getByText('task #42').waitFor();
  await page.getByRole('button', { name: 'Fail over db1…' }).click();
  const ask = page.getByRole('alertdialog', { name: 'Fail over db1 to this host?' });
  await ask.waitFor();
  assert.match(await ask.innerText(), /is lost/);
  await ask.getByLabel('Recovery point').selectOption('4');
  await axe(page, 'failover dialog');
  await ask.getByRole('button', { name: 'Fail over db1' }).click();
  await ask.waitFor({ state: 'detached' });
  assert.deepEqual(posted, [['/api/v1/replicas/web1/pause', '{}', true],
    ['/api/v1/replicas/db1/failover', '{"point":4}', true]]);
  await page.context().close();
});

// Rule sets for the simulator and `vmshadow prune --dry-run --json`, as [field, value].
const PRUNE_CASES = [
  [['last', '2']],
  [['hourly', '1'], ['yearly', '1']],
  [['daily', '1'], ['monthly', '2']],
];

test('the prune simulator agrees with vmshadow prune --dry-run --json', async () => {
  await go(admin, '/repos/main');
  await admin.getByRole('heading', { name: 'Repository main' }).waitFor();
  for (const rules of PRUNE_CASES) {
    for (const k of ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly']) {
      const value = (rules.find(([r]) => r === k) || [k, ''])[1];
      await admin.getByLabel(`Keep ${k}`).fill(value);
    }
    await admin.getByRole('button', { name: 'Simulate' }).click();
    const summary = rules.map(([k, v]) => `keep-${k} ${v}`).join(', ');
    let shown = [];
    await until(`the simulation of ${summary} is shown`, async () => {
      shown = await admin.$$eval('table.sim-result tbody tr',
        (trs) => trs.map((tr) => [tr.dataset.point, tr.dataset.keep === 'keep', tr.cells[4].innerText]));
      const caption = await admin.locator('table.sim-result caption').allInnerTexts();
      return shown.length > 0 && caption.length === 1 && caption[0].includes(`for ${summary},`);
    });
    const args = rules.flatMap(([k, v]) => [`--keep-${k}`, v]);
    const cli = JSON.parse(execFileSync(env('E2E_VMSHADOW'),
      ['--json', '--repo', env('E2E_REPO'), 'prune', '--dry-run', ...args], { encoding: 'utf8' }));
    const want = cli.points.map((p) => [p.id, p.keep]);
    assert.ok(want.length >= 3, `the repository holds ${want.length} points`);
    assert.deepEqual(new Map(shown.map(([id, keep]) => [id, keep])), new Map(want), summary);
    if (rules[0][0] === 'last') {
      assert.ok(want.some(([, k]) => !k), 'keep-last 2 removes a point');
      await shot(admin, 'repository');
    }
  }
  await axe(admin, 'repository');
});

// Follows a task the page started to its end through the API, as the task page does.
async function taskEnd(page, id, timeoutMs) {
  let task;
  await until(`task ${id} ends`, async () => {
    task = await page.evaluate(async (n) => (await fetch(`/api/v1/tasks/${n}`)).json(), id);
    return !['queued', 'running'].includes(task.state);
  }, timeoutMs);
  return task;
}

test('verify with boot and restore as a new VM run to ok', { timeout: 600000 }, async () => {
  await go(admin, `/vm/${encodeURIComponent(VM)}`);
  await admin.locator('table.points tbody tr').first().waitFor();
  const started = admin.getByRole('status').getByRole('link', { name: /task #\d+/ });
  await admin.getByRole('button', { name: 'Verify with boot' }).click();
  const verify = Number((await started.innerText()).match(/\d+/)[0]);
  const v = await taskEnd(admin, verify, 300000);
  assert.equal(v.state, 'ok', `verify: ${v.error || ''}`);
  assert.equal(v.kind, 'verify');
  await admin.getByLabel('New VM name').fill(`${VM}-restored`);
  await admin.getByRole('button', { name: 'Restore as new VM' }).click();
  await until('a new task is started', async () => !(await started.innerText()).includes(`#${verify}`));
  const restore = Number((await started.innerText()).match(/\d+/)[0]);
  const r = await taskEnd(admin, restore, 300000);
  assert.equal(r.state, 'ok', `restore: ${r.error || ''}`);
  execFileSync('virsh', ['domstate', `${VM}-restored`]); // throws when there is no such domain
  // The verification is recorded on the point the page shows.
  await go(admin, `/vm/${encodeURIComponent(VM)}`);
  const latest = admin.locator(`tr[data-point="${v.result.point}"]`);
  await until('the verified point says so', async () => (await latest.innerText()).includes('yes'));
});

test('restore in place asks first, naming the VM; forget removes the point it names', async () => {
  await go(admin, `/vm/${encodeURIComponent(VM)}`);
  const rows = admin.locator('table.points tbody tr');
  await rows.first().waitFor();
  const before = await rows.count();
  const oldest = await rows.last().getAttribute('data-point');
  await rows.last().getByRole('radio').check();
  await admin.getByRole('button', { name: 'Restore in place…' }).click();
  const ask = admin.getByRole('alertdialog');
  assert.match(await ask.innerText(), new RegExp(`Replace VM ${VM}\\?[\\s\\S]*replaces all its disks`));
  await ask.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await admin.getByRole('alertdialog').count(), 0);
  await admin.getByRole('button', { name: 'Forget point…' }).click();
  assert.match(await ask.innerText(), new RegExp(oldest.slice(0, 12)));
  await ask.getByRole('button', { name: 'Forget point' }).click();
  await until('the point is gone', async () => (await rows.count()) === before - 1);
  assert.equal(await admin.locator(`tr[data-point="${oldest}"]`).count(), 0);
  const cli = JSON.parse(execFileSync(env('E2E_VMSHADOW'), ['--json', '--repo', env('E2E_REPO'), 'points'],
    { encoding: 'utf8' }));
  const ids = (Array.isArray(cli) ? cli : cli.points || []).map((p) => p.id);
  assert.equal(ids.length, before - 1);
  assert.ok(!ids.includes(oldest), 'the repository no longer holds the point');
});

test('an audit token shows no action buttons and a forged POST gets 403', async () => {
  const page = await newPage();
  await signIn(page, AUDIT);
  await page.locator(`tr[data-vm="${VM}"]`).waitFor();
  await go(page, `/vm/${encodeURIComponent(VM)}`);
  await page.getByText('may look but not act').waitFor();
  await page.locator('table.points tbody tr').first().waitFor();
  const actionNames = /Back up now|Verify with boot|Restore|Forget|Run now|New job|Edit|Delete|Abort/;
  assert.equal(await page.getByRole('button', { name: actionNames }).count(), 0);
  await go(page, '/jobs');
  await page.locator('tr[data-job]').first().waitFor();
  assert.equal(await page.getByRole('button', { name: actionNames }).count(), 0);
  const statuses = await page.evaluate(async (vm) => {
    const s = await (await fetch('/api/v1/session')).json();
    const forged = (headers) => fetch('/api/v1/backup', { method: 'POST', body: JSON.stringify({ vm }),
      headers: { 'Content-Type': 'application/json', ...headers } }).then((r) => r.status);
    return [await forged({ 'X-CSRF-Token': s.csrf || '' }), await forged({})];
  }, VM);
  assert.deepEqual(statuses, [403, 403]);
  await page.context().close();
});

test('sign-out ends the session', async () => {
  const cookies = await admin.context().cookies();
  const session = cookies.find((c) => c.name === 'vmshadow_session');
  assert.ok(session, 'the session cookie is set');
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, 'Strict');
  // A session ended elsewhere (another tab) sends this page back to the sign-in form too.
  const second = await admin.context().newPage();
  await second.goto(`${URL}#/tasks`);
  await second.getByRole('heading', { name: 'Tasks' }).waitFor();
  await admin.getByRole('button', { name: 'Sign out' }).click();
  await admin.getByLabel('API token').waitFor();
  await second.getByLabel('API token').waitFor({ timeout: 10000 });
  // The old cookie, sent again by another client, no longer signs anyone in.
  const other = await browser.newContext({ ignoreHTTPSErrors: true });
  await other.addCookies([session]);
  const r = await other.request.get(`${URL}api/v1/session`);
  assert.equal(r.status(), 401);
  await other.close();
  await admin.context().close();
});
