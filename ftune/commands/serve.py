"""`ftune serve`: an HTTP server (FastAPI + uvicorn) for a run or an exported model folder.

The model is loaded once (ftune.inference.Inference: the run's settings, precision and batch size) before
the port opens, so /health answers only when the model is ready. uvicorn handles SIGTERM and SIGINT:
it stops accepting connections, lets in-flight requests finish, then exits 0.
"""

from __future__ import annotations

import logging
import os
import signal

from omegaconf import DictConfig

from ftune.errors import FtuneError
from ftune.inference import Inference

log = logging.getLogger("ftune")


def run(cfg: DictConfig) -> dict:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise FtuneError(f"{error.name} is not installed", where="ftune serve",
                         fix="pip install 'ftune[serve]' (fastapi, uvicorn)") from error
    _check_port(cfg.host, cfg.port)  # before the slow model load
    api_key = cfg.api_key or os.environ.get("FTUNE_API_KEY") or None
    inference = Inference.load(cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines%s", cfg.host,
                    "" if api_key else " and no api_key is set")
    log.info("API key %s", "required (Authorization: Bearer <key>)" if api_key else "not required")
    if cfg.workers > 1:
        del inference  # loaded here only to refuse a bad run before the port opens: each worker loads its own
        from ftune.serve.workers import serve_in_workers

        log.info("starting %d server processes on http://%s:%d", cfg.workers, cfg.host, cfg.port)
        serve_in_workers(cfg, api_key)
        log.info("server stopped")
        return {"served": True}
    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    app = create_app(inference, ServeSettings.from_cfg(cfg, api_key=api_key))
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                           access_log=cfg.log_requests, timeout_graceful_shutdown=60))
    # uvicorn finishes in-flight requests on SIGTERM/SIGINT, then re-raises the signal to the handler that was
    # in place before it started; this one records it, so a graceful stop exits 0 instead of dying by signal
    stopped_by: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: stopped_by.append(number))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    how = f" on {signal.Signals(stopped_by[0]).name}, in-flight requests answered" if stopped_by else ""
    log.info("server stopped%s", how)
    return {"served": True}


def _check_port(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise FtuneError(f"cannot listen on {host}:{port}: {error.strerror}", where="port",
                             fix="pick a free port, e.g. port=8001, or stop what uses it") from error
