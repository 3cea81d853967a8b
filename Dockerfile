# One image for every Switchboard service; the command picks the role:
#   switchboard edge | switchboard agent --name <agent> | switchboard supervisor --name <name>
# Configuration comes only from SWITCHBOARD_* environment variables; logs are JSON lines on stdout.
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11) and its venv module. Users keep the
# official Python image; machines that cannot pull one build a local base (deploy/base-image.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
LABEL io.switchboard.stage=build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/switchboard
WORKDIR /src
# Dependencies (and the build backend) first, in their own layer, from pyproject.toml alone: a change
# to the code rebuilds only the last, small, offline install. A CA bundle passed as the build secret `ca`
# (--secret id=ca,src=...) is trusted by pip; without one, pip uses the base image's certificates.
# EXTRAS adds optional dependency groups, e.g. --build-arg EXTRAS=voice (offline speech, ~620 MB) or
# EXTRAS=voice,embeddings; the default image has neither.
ARG EXTRAS=""
COPY pyproject.toml deploy/requirements.py ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/switchboard/bin/python requirements.py "$EXTRAS" > requirements.txt \
    && /opt/switchboard/bin/pip install --quiet --requirement requirements.txt
COPY README.md ./
COPY libs ./libs
COPY services ./services
RUN /opt/switchboard/bin/pip install --quiet --no-deps --no-build-isolation . \
    && /opt/switchboard/bin/pip uninstall --quiet --yes setuptools wheel pip  # build tools only

FROM ${BASE_IMAGE}
# A fixed numeric uid (Kubernetes runAsNonRoot checks it) that owns the only path it writes, its HOME.
# Tools keep their business data in the shared NATS store, not on the container's disk.
RUN groupadd --gid 10001 switchboard \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/switchboard --shell /usr/sbin/nologin switchboard \
    && mkdir -p /var/lib/switchboard \
    && chown -R 10001:10001 /var/lib/switchboard
COPY --from=build /opt/switchboard /opt/switchboard
COPY scenarios /app/scenarios
ENV PATH=/opt/switchboard/bin:$PATH \
    HOME=/var/lib/switchboard \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHBOARD_SCENARIOS_DIR=/app/scenarios \
    SWITCHBOARD_EDGE_HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/switchboard
EXPOSE 8080
# Exec form: `switchboard` is PID 1 and gets SIGTERM itself, which starts its drain.
ENTRYPOINT ["switchboard"]
CMD ["edge"]
