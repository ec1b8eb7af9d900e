// SPDX-License-Identifier: MIT
// Formatting shared by the pages.
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${u[i]}`;
}

export function age(s) {
  if (s === null || s === undefined) return '—';
  s = Math.max(0, Math.round(s));
  const parts = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  const out = [];
  for (const [n, unit] of parts) {
    if (s >= n || (unit === 's' && out.length === 0)) { out.push(`${Math.floor(s / n)} ${unit}`); s %= n; }
    if (out.length === 2) break;
  }
  return out.join(' ');
}

export function when(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function unixOf(t) {
  if (t === null || t === undefined) return null;
  if (typeof t === 'number') return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms / 1000;
}

// The API's protection states, as the issue names them for people.
export function protectionLevel(p) {
  switch (p) {
    case 'protected': return { level: 'ok', text: 'ok' };
    case 'stale': return { level: 'warning', text: 'warning: last good point is old' };
    case 'pending': return { level: 'warning', text: 'warning: no good point yet' };
    case 'failing': return { level: 'failing', text: 'failing' };
    default: return { level: 'unprotected', text: 'unprotected' };
  }
}

export const ROLES = { audit: 1, operator: 2, admin: 3 };
export function may(session, role) {
  return !!session && (ROLES[session.role] || 0) >= ROLES[role];
}

export const shortId = (id) => String(id || '').slice(0, 12);
