// The iframe UI of the js-notes example. The host page hands it a token in the URL fragment
// (#token=...; fragments never reach servers); every call goes through the Kelp gateway to
// the extension's handler.
const token = new URLSearchParams(location.hash.slice(1)).get('token') || '';
const api = '/api/ext/com.kelp.examples.js-notes';

async function call(path, init = {}) {
  const res = await fetch(api + path, { ...init, headers: { Authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers || {}) } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error && body.error.message ? body.error.message : `${res.status}`);
  return body;
}

async function refresh() {
  const { notes } = await call('/notes');
  const list = document.getElementById('notes');
  list.textContent = '';
  for (const note of notes) {
    const li = document.createElement('li');
    li.textContent = `${note.id}: ${note.text} (revision ${note.revision})`;
    list.appendChild(li);
  }
}

async function main() {
  try {
    const hello = await call('/hello');
    const p = document.getElementById('message');
    p.textContent = hello.message;
    p.className = 'ok';
    await refresh();
  } catch (e) {
    document.getElementById('error').textContent = `The extension could not be reached: ${e.message}`;
  }
}

document.getElementById('add').addEventListener('submit', async (event) => {
  event.preventDefault();
  const id = document.getElementById('note-id').value;
  const text = document.getElementById('note-text').value;
  try {
    await call(`/notes/${encodeURIComponent(id)}`, { method: 'PUT', body: JSON.stringify({ text }) });
    await refresh();
  } catch (e) {
    document.getElementById('error').textContent = e.message;
  }
});

main();
