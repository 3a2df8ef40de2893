"""The Python reference tus server for the benchmarks: tuspyserver's FastAPI router on uvicorn.

Run by the benchmark with the interpreter of ``bench/.tuspyserver-venv`` (never imported by
tusserver's own environment): ``uvicorn tuspy_app:app --app-dir bench/reference``. It is the
setup of tuspyserver's README ("Basic setup": a FastAPI app, the CORS middleware exposing the
tus headers, the router mounted at /files), minus the completion hook that prints. The upload
directory comes from ``TUSPY_DIR``; ``TUSPY_MAX_SIZE`` raises the size limit if a scenario
needs it.
"""

import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from tuspyserver import create_tus_router

app = FastAPI()
app.add_middleware(
    CORSMiddleware,
    allow_origins=["*"],
    allow_methods=["*"],
    allow_headers=["*"],
    expose_headers=[
        "Location",
        "Upload-Offset",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Upload-Expires",
        "Upload-Length",
    ],
)
app.include_router(
    create_tus_router(
        prefix="files",
        files_dir=os.environ["TUSPY_DIR"],
        max_size=int(os.environ.get("TUSPY_MAX_SIZE", str(128 * 1024**3))),
    )
)
