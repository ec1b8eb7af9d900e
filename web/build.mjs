// SPDX-License-Identifier: MIT
// Bundles the dashboard into dist/ (index.html, assets/app-HASH.js, assets/app-HASH.css) with
// esbuild and prints what the browser downloads. The hashed names under assets/ let vmshadowd
// have them cached for a year while index.html is revalidated. No network at build time
// beyond `npm ci`, none at run time.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
const result = await build({
  entryPoints: { app: 'src/main.js' },
  entryNames: 'assets/[name]-[hash]',
  metafile: true,
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  outdir: 'dist',
  legalComments: 'none',
  logLevel: 'warning',
});
const outputs = Object.keys(result.metafile.outputs).map((f) => f.replace(/^dist\//, ''));
const js = outputs.find((f) => f.endsWith('.js'));
const css = outputs.find((f) => f.endsWith('.css'));
writeFileSync('dist/index.html', readFileSync('src/index.html', 'utf8')
  .replace('href="app.css"', `href="${css}"`).replace('src="app.js"', `src="${js}"`));
let raw = 0, gz = 0;
for (const f of ['index.html', js, css]) {
  const b = readFileSync(`dist/${f}`);
  raw += b.length;
  gz += gzipSync(b).length;
  console.log(`dist/${f}: ${b.length} bytes (${gzipSync(b).length} gzipped)`);
}
console.log(`total: ${raw} bytes (${gz} gzipped)`);
