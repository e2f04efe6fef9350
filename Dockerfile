# edge360 image: `edge360 serve` reading /etc/edge360/edge360.toml on port 8080, as a non-root user.

# hls.js for the /player page comes from its npm package, never from the repository
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# edge360 in a virtualenv with its hot modules compiled by mypyc (docs/ARCHITECTURE.md, "Compiled
# modules"): the full image has the compiler; CI=true makes a failed compile fail the build
FROM python:3.11-bookworm AS build
ENV PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY scripts/build_native.py ./scripts/
RUN python -m venv /opt/edge360 \
 && /opt/edge360/bin/pip install --no-compile . "mypy>=1.8" \
 && CI=true /opt/edge360/bin/python scripts/build_native.py --root \
      "$(/opt/edge360/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && /opt/edge360/bin/pip uninstall -y -q mypy

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/edge360/bin:$PATH
COPY --from=build /opt/edge360 /opt/edge360
COPY --from=web /web/node_modules/hls.js/dist/hls.min.js /opt/edge360/lib/python3.11/site-packages/edge360/static/vendor/hls.min.js
COPY config/docker/edge360.toml /etc/edge360/edge360.toml
COPY media /srv/edge360/media
RUN useradd --system --uid 10001 --home-dir /var/lib/edge360 --create-home edge360
USER 10001
WORKDIR /var/lib/edge360
EXPOSE 8080
# no curl in a slim image: the health check uses the Python the server runs on
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["edge360", "serve", "--config", "/etc/edge360/edge360.toml"]
