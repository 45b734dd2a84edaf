// A JavaScript extension built with componentize-js against kelp:extension/runner.
// It uses every everyday capability: context, config, logging, stdout, storage (with
// compare-and-set), secrets and http.fetch. Build it with:
//   node tools/componentize/build.mjs examples/js-notes/src/index.js examples/js-notes/dist/main.wasm
import { getContext } from 'alga:extension/context';
import * as secrets from 'alga:extension/secrets';
import * as storage from 'alga:extension/storage';
import { logInfo, logWarn } from 'alga:extension/logging';
import { fetch } from 'alga:extension/http';
import { getUser } from 'alga:extension/user-v2';
import * as config from 'kelp:extension/config';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const NAMESPACE = 'notes';

function json(status, value) {
  return {
    status,
    headers: [{ name: 'content-type', value: 'application/json' }],
    body: encoder.encode(JSON.stringify(value)),
  };
}

// Host functions that return result<_, E> throw on E; the error case is in `payload`.
function errorCase(e) {
  return e && e.payload !== undefined ? e.payload : String(e);
}

function hello(url) {
  const ctx = getContext();
  const greeting = config.get('greeting') ?? 'Hello';
  return json(200, {
    message: `${greeting}, ${ctx.tenantId}!`,
    context: ctx,
    configVersion: config.version(),
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
  });
}

function noteJson(entry) {
  return { id: entry.key, text: decoder.decode(entry.value), revision: Number(entry.revision) };
}

function getNote(id) {
  try {
    return json(200, noteJson(storage.get(NAMESPACE, id)));
  } catch (e) {
    const why = errorCase(e);
    return json(why === 'missing' ? 404 : 500, { error: why });
  }
}

function putNote(id, body) {
  let input;
  try {
    input = JSON.parse(decoder.decode(body ?? new Uint8Array()));
  } catch {
    return json(400, { error: 'body must be JSON: {"text": "...", "revision"?: n}' });
  }
  if (typeof input.text !== 'string') return json(400, { error: 'text is required' });
  try {
    const entry = storage.put({
      namespace: NAMESPACE,
      key: id,
      value: encoder.encode(input.text),
      revision: input.revision === undefined ? undefined : BigInt(input.revision),
    });
    logInfo(`saved note ${id} at revision ${entry.revision}`);
    return json(200, noteJson(entry));
  } catch (e) {
    const why = errorCase(e);
    return json(why === 'conflict' ? 409 : 500, { error: why });
  }
}

function deleteNote(id) {
  try {
    storage.delete(NAMESPACE, id);
    return json(200, { deleted: id });
  } catch (e) {
    const why = errorCase(e);
    return json(why === 'missing' ? 404 : 500, { error: why });
  }
}

function listNotes(cursor) {
  try {
    const entries = storage.listEntries(NAMESPACE, cursor ?? undefined);
    const notes = entries.map(noteJson);
    return json(200, { notes, next: notes.length === 100 ? notes[notes.length - 1].id : null });
  } catch (e) {
    return json(500, { error: errorCase(e) });
  }
}

function secretInfo() {
  // Never echo a secret: report that it is there and how long it is.
  try {
    const value = secrets.get('api_key');
    return json(200, { present: true, length: value.length, keys: secrets.listKeys() });
  } catch (e) {
    return json(200, { present: false, error: errorCase(e), keys: secrets.listKeys() });
  }
}

function fetchUrl(target) {
  if (!target) return json(400, { error: 'url query parameter is required' });
  try {
    const res = fetch({ method: 'GET', url: target, headers: [{ name: 'accept', value: '*/*' }], body: undefined });
    const text = decoder.decode(res.body ?? new Uint8Array());
    return json(200, { status: res.status, bytes: res.body ? res.body.length : 0, body: text.slice(0, 200) });
  } catch (e) {
    return json(502, { error: errorCase(e) });
  }
}

function logLines(count) {
  const n = Math.min(Number(count ?? 3) || 3, 1000000);
  for (let i = 0; i < n; i++) console.log(`line ${i} of ${n}: ${'x'.repeat(64)}`);
  console.error('done writing');
  logInfo(`wrote ${n} lines to stdout`);
  return json(200, { lines: n });
}

function whoAmI() {
  try {
    return json(200, getUser());
  } catch (e) {
    return json(403, { error: errorCase(e) });
  }
}

export function handler(request) {
  const { method, url: rawUrl, body } = request.http;
  const url = new URL(rawUrl, 'http://extension.local');
  const path = url.pathname;
  logInfo(`${method} ${path}`);
  const note = path.match(/^\/notes\/([^/]+)$/);
  if (path === '/hello') return hello(url);
  if (path === '/notes') return listNotes(url.searchParams.get('cursor'));
  if (note && method === 'GET') return getNote(decodeURIComponent(note[1]));
  if (note && method === 'PUT') return putNote(decodeURIComponent(note[1]), body);
  if (note && method === 'DELETE') return deleteNote(decodeURIComponent(note[1]));
  if (path === '/secret') return secretInfo();
  if (path === '/fetch') return fetchUrl(url.searchParams.get('url'));
  if (path === '/log') return logLines(url.searchParams.get('lines'));
  if (path === '/user') return whoAmI();
  logWarn(`no route for ${method} ${path}`);
  return json(404, { error: 'no such route' });
}
