# A Kopf operator on Operon: Debian's Python with the operon-kopf wheel (the SDK and the core it
# carries) in /opt/kopf, and the example operator in /app. No API client is installed (the example
# needs none): add your operator's requirements (kubernetes, pykube-ng…) to the pip install.
# Its entrypoint is `kopf`:
#   kopf serve /app/operator.py --listen …   the handlers only, for a core in another container
#   kopf run -A /app/operator.py             the handlers and the bundled core in one container
# (--health-listen 0.0.0.0:50052 with either: the gRPC health service alone, for grpc probes.)
#
# Built by deploy/docker/build.sh, whose build context holds the operon-kopf wheel and every wheel
# it needs (wheel/*.whl, downloaded on the build's host: the build needs no network) and the
# operator (operator.py). BASE is any Debian-like image with python3 (>= 3.11) and its venv
# module: build.sh makes one with mmdebstrap (no registry needed); elsewhere, for example,
# --build-arg BASE=docker.io/library/python:3.11-slim-bookworm.
ARG BASE=localhost/operon-base:bookworm-python
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/kopf/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The wheels are mounted for this step only (no layer keeps them).
RUN --mount=type=bind,source=wheel,target=/tmp/wheel \
    python3 -m venv /opt/kopf \
 && /opt/kopf/bin/pip install --no-index --find-links /tmp/wheel "$(ls /tmp/wheel/operon_kopf-*.whl)" \
 && /opt/kopf/bin/kopf --version
COPY operator.py /app/operator.py
USER 65532:65532
WORKDIR /app
EXPOSE 50051 50052 8081
ENTRYPOINT ["/opt/kopf/bin/kopf"]
CMD ["serve", "/app/operator.py", "--listen=0.0.0.0:50051", "--health-listen=0.0.0.0:50052", "--liveness=http://0.0.0.0:8081/healthz"]
