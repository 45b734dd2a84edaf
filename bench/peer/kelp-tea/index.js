// Kelp's side of the peer benchmark (alga:extension/runner world): the same answer as
// ../wasi-http-tea.js, with no host calls.
export function handler() {
  return {
    status: 418,
    headers: [{ name: 'content-type', value: 'application/json' }],
    body: new TextEncoder().encode('{"tea":true}'),
  };
}
