// Build a JavaScript fetch-event handler into a wasi:http component for `wasmtime serve`:
//
//   node bench/peer/build-wasi-http.mjs <source.js> <out.wasm> <scratch-dir>
//
// Uses the componentize-js that Kelp's own build uses (tools/componentize, after `npm ci`).
// The WASI WIT comes from jco (a dependency of componentize-js), re-versioned to the
// wasi:http version the StarlingMonkey engine exports its handler at, so the fetch event
// attaches (the two are semver-compatible 0.2.x releases).
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [source, out, scratch] = process.argv.slice(2);
if (!source || !out || !scratch) {
  console.error('usage: node build-wasi-http.mjs <source.js> <out.wasm> <scratch-dir>');
  process.exit(2);
}
const modules = resolve(dirname(fileURLToPath(import.meta.url)), '../../tools/componentize/node_modules');
const cjs = join(modules, '@bytecodealliance/componentize-js');

// The version of `wasi:http/incoming-handler@X#handle` in the engine's exports.
const engine = await readFile(join(cjs, 'lib/starlingmonkey_embedding.wasm'));
const exported = /wasi:http\/incoming-handler@(0\.2\.\d+)#handle/.exec(engine.toString('latin1'));
if (!exported) throw new Error('the StarlingMonkey engine exports no wasi:http/incoming-handler@0.2.x');
const engineVersion = exported[1];

// jco's newest 0.2.x WASI WIT.
const builtin = join(modules, '@bytecodealliance/jco/lib/wit/builtin');
const versions = (await readdir(builtin)).filter((v) => /^0\.2\.\d+$/.test(v));
versions.sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2]));
if (versions.length === 0) throw new Error(`no 0.2.x WASI WIT under ${builtin}`);
const witVersion = versions[versions.length - 1];

const wit = resolve(scratch, 'wit');
await rm(wit, { recursive: true, force: true });
await mkdir(join(wit, 'deps'), { recursive: true });
for (const pkg of await readdir(join(builtin, witVersion))) {
  const text = await readFile(join(builtin, witVersion, pkg, 'package.wit'), 'utf8');
  await mkdir(join(wit, 'deps', pkg), { recursive: true });
  await writeFile(join(wit, 'deps', pkg, 'package.wit'), text.replaceAll(`@${witVersion}`, `@${engineVersion}`));
}
await writeFile(
  join(wit, 'world.wit'),
  `package kelp-bench:peer;\n\nworld tea {\n  include wasi:http/proxy@${engineVersion};\n}\n`,
);

const { componentize } = await import(pathToFileURL(join(cjs, 'src/componentize.js')).href);
const { component } = await componentize({ sourcePath: resolve(source), witPath: wit, worldName: 'kelp-bench:peer/tea' });
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
console.log(`built ${out} (${component.length} bytes, wasi:http@${engineVersion})`);
