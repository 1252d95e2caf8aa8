# The xypipe image: the package and its pinned dependencies (`pip install .`), the demo page's
# static files, and nothing else. Configs and keys are mounted (compose.yaml mounts
# configs/compose/<service>.toml at /etc/xypipe/xypipe.toml and the dev keys beside the
# working directory); every service is one `xypipe run`.
#
#   docker build -t xypipe .
#   docker run --rm xypipe --help
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    XYPIPE_HEALTHZ=http://127.0.0.1:8080/healthz

WORKDIR /app

# Dependencies and the package in one layer; the sources change more often than the pins, but
# a plain `pip install .` keeps the image honest about what a user gets.
COPY pyproject.toml README.md ./
COPY xypipe ./xypipe
RUN pip install --no-cache-dir . \
    && rm -rf /app/xypipe /app/build /app/*.egg-info

COPY ui-static ./ui-static

# A user of its own, no shell, no home of its own; var/ for what a config may write
# (the embedded nats-server's data dir, when one is used).
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin xypipe \
    && mkdir -p /app/var \
    && chown xypipe:xypipe /app/var
# Numeric, so runtimes (Kubernetes runAsNonRoot) can verify it is not root.
USER 10001:10001

# Gateway (WebSocket, /healthz, /metrics), aggregator, UI demo page.
EXPOSE 8080 8090 5174

# Readiness (/healthz answers 503 until data flows): compose's `service_healthy` waits on it.
# Each service names its own port in XYPIPE_HEALTHZ; Python, since the slim image has no curl.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['XYPIPE_HEALTHZ'], timeout=2).status == 200 else 1)"]

ENTRYPOINT ["xypipe"]
CMD ["--help"]
