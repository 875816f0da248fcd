"""`ftune serve workers=N`: N server processes on one port, each with its own model (uvicorn's supervisor).

In one process the HTTP parsing, the event loop and the model thread share one interpreter lock: under load
the server measured at most one core busy (docs/serving.md). Separate processes do not share it. uvicorn binds
the port once, spawns the workers (fresh interpreters: torch's thread pools are never forked), restarts one
that dies, and on SIGTERM/SIGINT stops them all after their in-flight requests. The workers read the command's
resolved config from the environment; the parent has loaded the model once before, so a bad run is still one
line and exit 2 before the port opens.
"""

from __future__ import annotations

import logging
import os

CONFIG_VARIABLE = "FTUNE_SERVE_CONFIG"


def serve_in_workers(cfg, api_key: str | None) -> None:
    import uvicorn
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    os.environ[CONFIG_VARIABLE] = OmegaConf.to_yaml({**resolved, "api_key": api_key})
    uvicorn.run("ftune.serve.workers:app_in_worker", factory=True, workers=cfg.workers, host=cfg.host,
                port=cfg.port, log_level="warning", access_log=cfg.log_requests, timeout_graceful_shutdown=60)


def app_in_worker():
    """uvicorn's app factory, called once in each worker process."""
    from omegaconf import OmegaConf

    from ftune.inference import Inference
    from ftune.serve.app import create_app
    from ftune.serve.http import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg = OmegaConf.create(os.environ[CONFIG_VARIABLE])
    return create_app(Inference.load(cfg), ServeSettings.from_cfg(cfg))
