// {{name}}: an Alga extension (alga:extension/runner), served by Kelp.
//
// Every request to /api/ext/{{name}}/<path> calls `handler` with the request; the endpoints
// it may receive are declared in manifest.json ("api.endpoints"), and each host function
// needs its capability in manifest.json ("capabilities").
import { getContext } from 'alga:extension/context';
import { logInfo } from 'alga:extension/logging';
import * as storage from 'alga:extension/storage';

const encoder = new TextEncoder();

function json(status, value) {
  return {
    status,
    headers: [{ name: 'content-type', value: 'application/json' }],
    body: encoder.encode(JSON.stringify(value)),
  };
}

// storage.get throws when the key is missing; the error case is in `payload`.
function readCounter() {
  try {
    const entry = storage.get('counters', 'hits');
    return { value: Number(new TextDecoder().decode(entry.value)), revision: entry.revision };
  } catch (e) {
    if (e && e.payload === 'missing') return { value: 0, revision: undefined };
    throw e;
  }
}

export function handler(request) {
  const { method, url: rawUrl } = request.http;
  const url = new URL(rawUrl, 'http://extension.local');
  logInfo(`${method} ${url.pathname}`);
  if (url.pathname === '/hello') {
    const ctx = getContext();
    return json(200, { message: `Hello, ${ctx.tenantId}!`, extension: ctx.extensionId });
  }
  if (url.pathname === '/counter' && method === 'GET') {
    return json(200, { hits: readCounter().value });
  }
  if (url.pathname === '/counter' && method === 'POST') {
    const current = readCounter();
    // Compare-and-set on the revision: of two concurrent POSTs one gets `conflict`, so no
    // increment is lost silently.
    try {
      storage.put({
        namespace: 'counters',
        key: 'hits',
        value: encoder.encode(String(current.value + 1)),
        revision: current.revision,
      });
    } catch (e) {
      if (e && e.payload === 'conflict') return json(409, { error: 'conflict: try again' });
      throw e;
    }
    return json(200, { hits: current.value + 1 });
  }
  return json(404, { error: 'no such route' });
}
