// The peer's guest: a wasi:http component (StarlingMonkey's fetch event) giving the same
// answer as kelp-tea/index.js. `wasmtime serve` runs it; kelp-bench builds it.
addEventListener('fetch', (event) => {
  event.respondWith(
    new Response('{"tea":true}', { status: 418, headers: { 'content-type': 'application/json' } }),
  );
});
