// {{name}}: an Alga extension (alga:extension/runner) in TypeScript, served by Kelp.
// `kelp build` strips the types and bundles src/ with esbuild, then builds the component
// with componentize-js; the types of the host interfaces are in src/alga.d.ts.
//
// Every request to /api/ext/{{name}}/<path> calls `handler`; the endpoints it may receive
// are declared in manifest.json ("api.endpoints"), and each host function needs its
// capability in manifest.json ("capabilities").
import { getContext } from 'alga:extension/context';
import { logInfo } from 'alga:extension/logging';
import * as storage from 'alga:extension/storage';
import type { ExecuteRequest, ExecuteResponse } from 'alga:extension/types';

const encoder = new TextEncoder();

function json(status: number, value: unknown): ExecuteResponse {
  return {
    status,
    headers: [{ name: 'content-type', value: 'application/json' }],
    body: encoder.encode(JSON.stringify(value)),
  };
}

// Host functions returning result<_, E> throw on E, with the error case in `payload`.
function errorCase(e: unknown): unknown {
  return (e as { payload?: unknown })?.payload;
}

function readCounter(): { value: number; revision?: bigint } {
  try {
    const entry = storage.get('counters', 'hits');
    return { value: Number(new TextDecoder().decode(entry.value)), revision: entry.revision };
  } catch (e) {
    if (errorCase(e) === 'missing') return { value: 0 };
    throw e;
  }
}

export function handler(request: ExecuteRequest): ExecuteResponse {
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
      if (errorCase(e) === 'conflict') return json(409, { error: 'conflict: try again' });
      throw e;
    }
    return json(200, { hits: current.value + 1 });
  }
  return json(404, { error: 'no such route' });
}
