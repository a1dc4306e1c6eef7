# syntax=docker/dockerfile:1
# One image for every Streamify component; the container's command picks the component.
#   docker build -t streamify .                          # gateway, auth, streaming, billing, analytics
#   docker build -t streamify-transcoder --target transcoder .   # + ffmpeg: transcoder and catalog
# The catalog sniffs uploads with ffprobe, so it runs from the transcoder image too.

# The SPA: built from the lockfile (npm ci), only its static files reach the image.
FROM node:22-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN pip install "uv==0.13.9"
COPY pyproject.toml requirements.lock ./
# Runtime dependencies only, at exactly the locked versions (the lock also holds the dev tools).
RUN uv pip compile pyproject.toml --constraint requirements.lock --python-version 3.11 -q -o runtime.txt \
 && uv venv /opt/venv --python /usr/local/bin/python3.11 \
 && uv pip sync --python /opt/venv/bin/python runtime.txt
COPY common ./common
COPY gateway ./gateway
COPY services ./services
COPY transcoder ./transcoder
COPY streamify ./streamify
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3.11/site-packages

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --gid 10001 streamify \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin streamify
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ENVIRONMENT=production
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# Default: the gateway. Services: python -m uvicorn services.<name>.app:create_app --factory ...
CMD ["python", "-m", "uvicorn", "gateway.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8080", \
     "--loop", "uvloop", "--http", "gateway.server:GatewayHttpProtocol", "--no-access-log"]

FROM runtime AS transcoder
USER root
RUN apt-get update \
 && apt-get install --yes --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001
CMD ["python", "-m", "transcoder.worker"]

# The default target (a plain `docker build`): the image without ffmpeg, and the one that runs the
# gateway, so it alone carries the SPA. The code lives in the venv's site-packages, not in a checkout,
# so the gateway is told where the build is; the files stay root-owned, read-only to the service user.
FROM runtime AS service
COPY --from=web /web/dist /opt/streamify/web
ENV GATEWAY_STATIC_DIR=/opt/streamify/web
