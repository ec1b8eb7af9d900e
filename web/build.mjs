// SPDX-License-Identifier: MIT
// Bundles the dashboard into dist/ (index.html, app.js, app.css) with esbuild and prints what
// the browser downloads. No network at build time beyond `npm ci`, none at run time.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
await build({
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  outdir: 'dist',
  legalComments: 'none',
  logLevel: 'warning',
});
copyFileSync('src/index.html', 'dist/index.html');
let raw = 0, gz = 0;
for (const f of readdirSync('dist')) {
  const b = readFileSync(`dist/${f}`);
  raw += b.length;
  gz += gzipSync(b).length;
  console.log(`dist/${f}: ${b.length} bytes (${gzipSync(b).length} gzipped)`);
}
console.log(`total: ${raw} bytes (${gz} gzipped)`);
