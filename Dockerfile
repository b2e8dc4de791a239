# One image for every Tiny-Saga process on Kubernetes (deploy/k8s/): the services, the relay, the
# init containers and the gateway (HAProxy 2.6 from Debian 12's package, as on one machine). The
# process is chosen by the container's command, e.g. `python -m tinysaga.order --port 8111` or
# `haproxy -db -f /etc/haproxy/haproxy.cfg`.
#
#   docker build -t registry.example.com/tinysaga:0.1.0 .
#
# Base pinned to the Python the suite runs on, on Debian 12; add its digest (@sha256:...) where
# your registry policy asks for one.
ARG BASE=python:3.11.7-slim-bookworm

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.lock deploy/k8s/requirements-image.txt ./
# only the runtime packages, at the lock's versions
RUN python -m venv /opt/tinysaga \
 && /opt/tinysaga/bin/pip install -c requirements.lock -r requirements-image.txt
COPY pyproject.toml ./
COPY src ./src
RUN /opt/tinysaga/bin/pip install --no-deps . \
 && find /opt/tinysaga -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends 'haproxy=2.6.*' \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 tinysaga \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/tinysaga --shell /usr/sbin/nologin tinysaga \
 && install -d -o 10001 -g 10001 /var/lib/tinysaga
COPY --from=build /opt/tinysaga /opt/tinysaga
ENV PATH=/opt/tinysaga/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TINYSAGA_HOME=/var/lib/tinysaga
WORKDIR /var/lib/tinysaga
# numeric, so that Kubernetes can check runAsNonRoot
USER 10001:10001
# no default process: each container names its own
CMD ["python", "-c", "print('name a process: python -m tinysaga.<service> --port N | tinysaga.platform.relay | haproxy')"]
