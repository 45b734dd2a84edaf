"""A Python extension built with componentize-py against alga:extension/runner (what
`kelp new --lang python` makes): context, logging and storage with compare-and-set.

Every request to /api/ext/com.kelp.examples.py-hello/<path> calls `WitWorld.handler`;
`kelp build` generates the `wit_world` bindings it imports.
"""

import json
from urllib.parse import urlsplit

import wit_world
from componentize_py_types import Err
from wit_world.imports import context, logging, storage, types


def _json(status: int, value) -> types.ExecuteResponse:
    return types.ExecuteResponse(
        status=status,
        headers=[types.HttpHeader(name="content-type", value="application/json")],
        body=json.dumps(value, separators=(",", ":")).encode(),
    )


def _read_counter():
    """(hits, revision); host functions returning result<_, E> raise Err with E in .value."""
    try:
        entry = storage.get("counters", "hits")
        return int(entry.value.decode()), entry.revision
    except Err as e:
        if e.value == types.StorageError.MISSING:
            return 0, None
        raise


class WitWorld(wit_world.WitWorld):
    def handler(self, request: types.ExecuteRequest) -> types.ExecuteResponse:
        method = request.http.method
        path = urlsplit(request.http.url).path
        logging.log_info(f"{method} {path}")
        if path == "/hello":
            ctx = context.get_context()
            return _json(200, {"message": f"Hello, {ctx.tenant_id}!", "extension": ctx.extension_id})
        if path == "/counter" and method == "GET":
            return _json(200, {"hits": _read_counter()[0]})
        if path == "/counter" and method == "POST":
            hits, revision = _read_counter()
            # Compare-and-set on the revision: of two concurrent POSTs one gets `conflict`,
            # so no increment is lost silently.
            try:
                storage.put(types.StorageEntry("counters", "hits", str(hits + 1).encode(), revision))
            except Err as e:
                if e.value == types.StorageError.CONFLICT:
                    return _json(409, {"error": "conflict: try again"})
                raise
            return _json(200, {"hits": hits + 1})
        return _json(404, {"error": "no such route"})
