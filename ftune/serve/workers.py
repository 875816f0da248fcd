"""`ftune serve workers=N`: N server processes on one port, each with its own model.

In one process the HTTP parsing, the event loop and the model thread share one interpreter lock: under load
the server measured at most one core busy (docs/serving.md). Separate processes do not share it. Each worker
is a fresh interpreter (spawned: torch's thread pools are never forked) that loads the model, then binds its
own socket to the port with SO_REUSEPORT, so the kernel spreads new connections over the workers that are
ready. (uvicorn's own `workers` shares one listening socket: a client's keep-alive connection stays with
whichever worker accepted it first, and measured at 32 clients one worker took nearly all of them.)

The parent has loaded the model once before (a bad run is one line and exit 2 before any worker starts); it
passes the resolved config through the environment, forwards SIGTERM/SIGINT (each worker finishes its
in-flight requests, as uvicorn does) and, if a worker dies, stops the others and exits 1, for the process
supervisor (systemd, Kubernetes) to restart the whole server.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket

CONFIG_VARIABLE = "FTUNE_SERVE_CONFIG"


def serve_in_workers(cfg, api_key: str | None) -> None:
    """Run cfg.workers server processes until a signal stops them (returns) or one of them dies (exit 1)."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    os.environ[CONFIG_VARIABLE] = OmegaConf.to_yaml({**resolved, "api_key": api_key})
    try:
        supervise([(_worker, ())] * cfg.workers)
    finally:
        os.environ.pop(CONFIG_VARIABLE, None)  # it holds the API key: no later child of this process inherits it


def supervise(targets: list[tuple]) -> None:
    """A spawned process per (function, args), until SIGTERM/SIGINT, forwarded to each, stops them all (returns
    once they have finished) or one exits on its own: the others are stopped, then SystemExit (exit 1)."""
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=target, args=args, name=f"ftune-serve-{n}", daemon=False)
               for n, (target, args) in enumerate(targets)]
    stopping: list[int] = []
    signalled: set[int] = set()  # once each: uvicorn takes a second SIGTERM as "abort in-flight requests"

    def stop(number, frame) -> None:
        stopping.append(number)
        for worker in workers:
            if worker.is_alive() and worker.pid not in signalled:
                signalled.add(worker.pid)
                os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        if stopping:  # a signal while starting them: the ones started after it are stopped too
            stop(None, None)
        while not stopping and all(worker.is_alive() for worker in workers):
            multiprocessing.connection.wait([worker.sentinel for worker in workers], timeout=1)
        if not stopping:
            dead = next(worker for worker in workers if not worker.is_alive())
            stop(None, None)
            for worker in workers:
                worker.join(90)
            raise SystemExit(f"ftune: server process {dead.name} exited with {dead.exitcode}; the others were stopped")
        for worker in workers:
            worker.join(90)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker() -> None:
    """One server process: the model, then its own SO_REUSEPORT socket, then uvicorn until SIGTERM."""
    import uvicorn
    from omegaconf import OmegaConf

    from ftune.inference import Inference
    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg = OmegaConf.create(os.environ[CONFIG_VARIABLE])
    app = create_app(Inference.load(cfg), ServeSettings.from_cfg(cfg))
    listener = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((cfg.host, cfg.port))  # only now, with the model loaded: no connection waits on a loading worker
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=cfg.log_requests,
                            timeout_graceful_shutdown=60)
    uvicorn.Server(config).run(sockets=[listener])
