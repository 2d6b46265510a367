"""`python -m api`: serve the HTTP API with uvicorn on API_HOST:API_PORT (the worker runs apart).
Run several behind a load balancer for more throughput or availability."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from infra.logs import install_log_masking
from infra.settings import settings


def main() -> None:
    cfg = settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    uvicorn.run(create_app(), host=cfg.api_host, port=cfg.api_port, proxy_headers=True, log_level="info")


if __name__ == "__main__":
    main()
