"""Serving optuna-dashboard on tune's storage, with the trials' weights as artifacts, on a threaded WSGI server.

optuna-dashboard's own `run_server` answers one request at a time; here each request gets a thread, so a slow
plot never stalls the page. Reads go through the same SQLite settings as the workers (WAL, 60 s busy timeout):
readers never block a writer, so a dashboard polling a running search cannot fail its trials.
"""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from tuner.errors import TuneError, raise_interrupt

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server with a thread per request; request threads never keep the process alive."""

    daemon_threads = True


class ThreadingWSGIServerV6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class QuietHandler(WSGIRequestHandler):
    """No log line per request: the dashboard polls every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_app(storage_url: str) -> WSGIApplication:
    """optuna-dashboard's WSGI app on `storage_url`, serving kept weights from the study's artifact store. An
    SQLite file that does not exist is a TuneError saying where studies are (it is never created)."""
    import optuna_dashboard

    from tuner.ship.artifacts import artifact_store_for
    from tuner.storage import open_existing_storage

    storage = open_existing_storage(storage_url)
    return cast("WSGIApplication", optuna_dashboard.wsgi(storage, artifact_store=artifact_store_for(storage_url)))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def exposure_warning(host: str) -> str | None:
    """One line for stderr when the dashboard is reachable from other machines (it can delete studies)."""
    if is_loopback(host):
        return None
    return (f"Warning: serving on {host}, reachable from other machines; anyone who can reach it can change or "
            "delete studies. Use --host 127.0.0.1 unless this network is trusted.")


def make_server(app: WSGIApplication, host: str, port: int) -> ThreadingWSGIServer:
    """A threaded WSGI server bound to host:port (port 0 picks a free one), or a TuneError naming the fix."""
    from wsgiref.simple_server import make_server as wsgiref_server

    server_class = ThreadingWSGIServerV6 if ":" in host else ThreadingWSGIServer
    try:
        return wsgiref_server(host, port, app, server_class=server_class, handler_class=QuietHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise TuneError(f"port {port} on {host} is in use (another dashboard?): pick another with --port") from None
        if e.errno == errno.EACCES:
            raise TuneError(f"no permission to listen on port {port}: use --port 1024 or higher") from None
        raise TuneError(f"cannot listen on {host}:{port}: {e.strerror}; check --host") from None


def server_url(server: ThreadingWSGIServer, host: str) -> str:
    """The dashboard's address, with the port actually bound."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{server.server_port}/dashboard/"


def serve(server: ThreadingWSGIServer) -> None:
    """Answer requests until Ctrl-C (or SIGTERM), then close the socket; returns normally."""
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
