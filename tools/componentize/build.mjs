// Build a JavaScript extension into a WebAssembly component with componentize-js.
//
//   node tools/componentize/build.mjs <source.js> <out.wasm> [world]
//
// The world defaults to kelp:extension/runner (the Alga world plus config); pass
// alga:extension/runner for a component of the plain Alga world. The WIT comes from wit/.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [source, out, world = 'kelp:extension/runner'] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node build.mjs <source.js> <out.wasm> [world]');
  process.exit(2);
}
const witPath = resolve(dirname(fileURLToPath(import.meta.url)), '../../wit');
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath,
  worldName: world,
  // Guests reach the network only through alga:extension/http (allow-listed, SSRF-guarded);
  // the runtime's own fetch() would need wasi:http, which Kelp does not link.
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(resolve(out)), { recursive: true });
await writeFile(out, component);
console.log(`built ${out} (${component.length} bytes, world ${world})`);
