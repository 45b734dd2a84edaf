"""moto's server, handling one request at a time.

Real DynamoDB applies a conditional write atomically; moto's threaded server checks the
condition and writes the item in two steps, so two concurrent compare-and-set requests can
both "win" there. The conformance suite races writers on purpose, so requests are
serialised here (connections are still accepted concurrently).

    python moto_serial.py <host> <port>
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
moto_app = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def app(environ, start_response):
    with one_at_a_time:
        # moto builds whole responses; materialise them inside the lock.
        return list(moto_app(environ, start_response))


run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)
