# A Python handler service: the Kopf-compatible SDK (sdk-python-compat) and an operator file,
# served with `kopf serve` for a core that runs elsewhere (another container of the pod, or its
# own Deployment). Build from the repository root:
#   docker build -f deploy/docker/python-handler.Dockerfile -t operon-python-handler:0.1.0 .
# For your own operator, replace deploy/example/operator.py (and add its requirements).
# (Not built by the tests: the project's machine has no container runtime.)
FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY sdk-python-compat /tmp/sdk
RUN pip install "/tmp/sdk[kubernetes]" && rm -rf /tmp/sdk
COPY deploy/example/operator.py /app/operator.py
USER 65532:65532
EXPOSE 50051 8081
ENTRYPOINT ["kopf"]
CMD ["serve", "/app/operator.py", "--listen=0.0.0.0:50051", "--liveness=http://0.0.0.0:8081/healthz"]
