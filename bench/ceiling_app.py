"""The ceiling: an empty multipart endpoint on the same FastAPI + uvicorn stack.

It reads the upload like the service does (FastAPI's `UploadFile` list, then `read()`)
and answers a tiny JSON, with uvicorn's default settings: the fastest any endpoint
that accepts this upload can be on this stack and machine.

    python -m bench.ceiling_app --port 8001 [--no-access-log]
"""

from __future__ import annotations

import argparse
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, UploadFile


def create_app() -> FastAPI:
    app = FastAPI(title="bench ceiling")

    @app.post("/upload")
    async def upload(files: Annotated[list[UploadFile], File()]) -> dict[str, int]:
        received = 0
        for file in files:
            received += len(await file.read())
        return {"files": len(files), "bytes": received}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--no-access-log", action="store_true", help="turn uvicorn's access log off"
    )
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, access_log=not args.no_access_log)


if __name__ == "__main__":
    main()
