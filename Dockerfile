# syntax=docker/dockerfile:1
# tusserver: a tus 1.0.0 resumable upload server.
#
#   docker build -t tusserver .                        # with ffmpeg (media probe, thumbnails)
#   docker build -t tusserver --build-arg WITH_FFMPEG=0 .   # smaller; no media probe
#
# The image runs `tusserver serve` on 0.0.0.0:8080 as an unprivileged user, with its data dir
# (spool, and for local storage the bytes and state) on the /data volume. Configure it with
# TUS_* environment variables (see docs/configuration.md); docker-compose.yml runs it in
# distributed mode with MinIO, Redis and Postgres.

ARG PYTHON_VERSION=3.11

# ---- builder: the package and its dependencies in a venv ---------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the wheel is built from (hatchling also reads README.md for the metadata).
COPY pyproject.toml README.md ./
COPY tusserver ./tusserver
COPY catalog ./catalog
COPY delivery ./delivery
COPY migrations ./migrations
# Every dependency ships wheels for CPython 3.11/3.12 on amd64 and arm64, so no compiler is
# needed. Wheels first, then an install from them alone: nothing is fetched twice.
RUN pip wheel --wheel-dir /wheels '.[s3,redis,postgres]' \
    && pip install --no-index --find-links /wheels 'tusserver[s3,redis,postgres]' \
    && tusserver --help >/dev/null

# ---- runtime ------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

# 1: install Debian's ffmpeg, so the catalog's media probe (ffprobe) and thumbnails (ffmpeg)
# work; 0: leave it out, and finished uploads are recorded without media details.
ARG WITH_FFMPEG=1
RUN if [ "$WITH_FFMPEG" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ffmpeg \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A fixed, unprivileged uid/gid, so volume permissions and `runAsNonRoot` checks are stable.
RUN groupadd --system --gid 10001 tus \
    && useradd --system --uid 10001 --gid tus --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin tus \
    && mkdir -p /app /data \
    && chown tus:tus /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TUS_HOST=0.0.0.0 \
    TUS_PORT=8080 \
    TUS_DATA_DIR=/data

WORKDIR /app
# A new named volume is initialised from the image's /data, so it is owned by tus too.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# Readiness, not mere liveness: /readyz fails while storage, state or the catalog is out of
# reach. Python, because the slim image has no curl; urlopen raises on any non-2xx answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=3)"]

ENTRYPOINT ["tusserver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
