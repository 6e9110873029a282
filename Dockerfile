# meshd's container image: the sidecar that takes Envoy's place in App Mesh task definitions
# and pods (`meshd sidecar`, configured by APPMESH_RESOURCE_ARN and the other variables
# Envoy read), and the init step that sets up interception (`meshd proxy-init`).
#
#   docker build -t meshd .
#
# Stage 1 compiles the Cython extensions (the router core, the HTTP/2 engine over
# libnghttp2, RE2, the span encoder) into a virtualenv; stage 2 is that virtualenv on a slim
# Debian with only the shared libraries it links, iptables for proxy-init, and curl and grep
# for the health check App Mesh task definitions already carry. It runs as uid 1337, App
# Mesh's IgnoredUID, and works on a read-only root filesystem: meshd writes only to
# /var/run/meshd and /tmp (give them volumes or tmpfs).

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libnghttp2-dev libre2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY proto proto
COPY _fastroute _fastroute
COPY registry registry
COPY meshd meshd
RUN python -m venv /opt/meshd \
 && /opt/meshd/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/meshd/bin/pip install --no-cache-dir . \
 && /opt/meshd/bin/python -c "import _fastroute._core, meshd.dataplane._h2, meshd.observe._spans"

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnghttp2-14 libre2-9 iptables curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1337 meshd \
 && useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin meshd \
 && install -d -o 1337 -g 1337 -m 0750 /var/run/meshd
COPY --from=build /opt/meshd /opt/meshd
ENV PATH=/opt/meshd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESHD_STATE_DIR=/var/run/meshd
USER 1337:1337
# 15000 inbound and 15001 outbound (interception), 15443 mTLS from other meshds,
# 15053 DNS, 9901 the admin port.
EXPOSE 15000 15001 15443 15053/udp 9901
VOLUME ["/var/run/meshd", "/tmp"]
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
  CMD curl -s http://localhost:9901/server_info | grep state | grep -q LIVE
ENTRYPOINT ["meshd"]
CMD ["sidecar"]
