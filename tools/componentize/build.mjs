// Build a JavaScript or TypeScript extension into a WebAssembly component.
//
//   node tools/componentize/build.mjs <entry.js|entry.ts> <out.wasm> [world|auto]
//   node tools/componentize/build.mjs <entry.js|entry.ts> <out.js> dev <project dir>
//
// Step 1, esbuild: checks the source (syntax errors come out as file:line:column: reason),
// strips TypeScript and bundles relative imports and npm packages into one ES module, as
// Alga's SDK does. A single plain .js file is componentized as written, so the guest's
// exceptions keep the author's line numbers.
// Step 2, componentize-js against the WIT next to this script (`../../wit`). The world is
// kelp:extension/runner when the source imports kelp:extension/config, else the plain
// alga:extension/runner ("auto", the default); pass a world to force one.
//
// With `dev` (kelp dev's fast path) step 2 is skipped: the bundle is written to <out.js> as a
// CommonJS module whose WIT imports are `require` calls, for dev-loader.js to evaluate, with
// its source map (paths relative to the project) on a last `//# kelpSourceMap=` line, so the
// host can report exceptions at the author's file:line:column.
//
// Writes `<out>.sources.json`, the files the build read (for up-to-date checks).
// Prints `built <out> (<bytes> bytes, world <world>)` on success; exits 1 with the errors
// on stderr, one `file:line:column: reason` per line where esbuild knows the place.
import { componentize } from '@bytecodealliance/componentize-js';
import { build } from 'esbuild';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [source, out, requestedWorld = 'auto', projectDir = '.'] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node build.mjs <entry.js|entry.ts> <out.wasm> [world|auto]');
  process.exit(2);
}
const entry = resolve(source);
const witPath = resolve(dirname(fileURLToPath(import.meta.url)), '../../wit');

// The interfaces the WIT defines (`alga:extension/storage`, `kelp:extension/config`, ...).
async function witInterfaces(dir) {
  const found = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.wit')) continue;
    const text = await readFile(resolve(entry.parentPath ?? entry.path, entry.name), 'utf8');
    const pkg = /^package\s+([\w-]+:[\w-]+)/m.exec(text)?.[1];
    for (const m of text.matchAll(/^\s*interface\s+([\w-]+)/gm)) found.push(`${pkg}/${m[1]}`);
  }
  return found.sort();
}
const interfaces = await witInterfaces(witPath);

// WIT imports are resolved by componentize-js, not files on disk; one that names no interface
// is an error here, at the import, with the list of what exists.
const witImports = {
  name: 'wit-imports',
  setup(b) {
    b.onResolve({ filter: /^(alga|kelp|wasi):/ }, (args) => {
      if (args.path.startsWith('wasi:') || interfaces.includes(args.path)) {
        return { path: args.path, external: true };
      }
      return {
        errors: [{ text: `"${args.path}" is not an interface Kelp provides; the interfaces are: ${interfaces.join(', ')}` }],
      };
    });
  },
};

const devBundle = requestedWorld === 'dev';
let bundled;
try {
  bundled = await build({
    entryPoints: [entry],
    bundle: true,
    format: devBundle ? 'cjs' : 'esm',
    ...(devBundle ? { sourcemap: 'external', sourcesContent: false, outfile: resolve(out) } : {}),
    platform: 'neutral',
    plugins: [witImports],
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
} catch (e) {
  for (const m of e.errors ?? [{ text: String(e) }]) {
    const at = m.location ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: ` : '';
    console.error(`${at}${m.text}`);
  }
  process.exit(1);
}

// Every file that went into the build, for the caller's up-to-date check.
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(
  `${out}.sources.json`,
  JSON.stringify(Object.keys(bundled.metafile.inputs).map((p) => resolve(p))),
);
if (devBundle) {
  const js = bundled.outputFiles.find((f) => f.path.endsWith('.js')).text;
  const map = JSON.parse(bundled.outputFiles.find((f) => f.path.endsWith('.map')).text);
  map.sources = map.sources.map((s) => relative(resolve(projectDir), resolve(dirname(resolve(out)), s)));
  const text = `${js.replace(/\n\/\/# sourceMappingURL=[^\n]*\n?$/, '\n')}//# kelpSourceMap=${JSON.stringify(map)}\n`;
  await writeFile(out, text);
  console.log(`bundled ${out} (${text.length} bytes, for the dev loader)`);
  process.exit(0);
}
const plainJs = /\.m?js$/.test(entry) && Object.keys(bundled.metafile.inputs).length === 1;
let sourcePath = entry;
if (!plainJs) {
  sourcePath = resolve(`${out}.bundle.mjs`);
  await mkdir(dirname(sourcePath), { recursive: true });
  await writeFile(sourcePath, bundled.outputFiles[0].contents);
}
const code = await readFile(sourcePath, 'utf8');
const world =
  requestedWorld !== 'auto'
    ? requestedWorld
    : /["']kelp:extension\/config["']/.test(code)
      ? 'kelp:extension/runner'
      : 'alga:extension/runner';

const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: world,
  // Guests reach the network only through alga:extension/http (allow-listed, SSRF-guarded);
  // the runtime's own fetch() would need wasi:http, which Kelp does not link.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
console.log(`built ${out} (${component.length} bytes, world ${world})`);
