# syntax=docker/dockerfile:1
# The serving image: the app, its dependencies and the shipped models, run by a non-root
# user with uvicorn as PID 1. See docs/deployment.md.
#
# CPU (default):  docker build -t vision-serving:cpu .
# GPU:            docker build -t vision-serving:gpu \
#                   --build-arg TENSORFLOW='tensorflow[and-cuda]==2.21.0' --build-arg DEVICE=gpu .
#                 docker run --gpus all -p 8000:8000 vision-serving:gpu
#
# BASE_IMAGE must provide Python 3.11 at /usr/local/bin/python, as python:3.11-slim does.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------- requirements
# The runtime requirements of pyproject.toml as a plain list. A stage of its own: edits to
# pyproject.toml that leave them alone (dev extras, tool settings) produce the same
# requirements.txt, and the builder's COPY of it (cached by content) keeps TensorFlow's
# layer.
FROM ${BASE_IMAGE} AS requirements
# Empty: the TensorFlow of pyproject.toml (tensorflow-cpu on x86_64). Else a requirement
# that replaces it, e.g. tensorflow[and-cuda]==2.21.0 for the GPU image.
ARG TENSORFLOW=""
WORKDIR /src
COPY pyproject.toml deploy/docker/pyproject_requirements.py ./
RUN python pyproject_requirements.py pyproject.toml --build-system --tensorflow "${TENSORFLOW}" \
    > requirements.txt

# ---------------------------------------------------------------------------- builder
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# 1. Dependencies, from the requirements alone: this layer survives every code change.
#    TensorFlow's C++ headers (~290 MB) only serve to compile custom ops: dropped.
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r requirements.txt \
    && rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include

# 2. The app itself, a regular (non-editable) install into its own prefix, so the runtime
#    stage copies it as a small layer on top of the dependencies. setuptools came with the
#    dependencies, so no isolated build environment is downloaded. Importing the app here
#    fails the build when app/ imports a package pyproject.toml does not declare.
COPY pyproject.toml README.md ./
COPY app/ app/
RUN pip install --no-cache-dir --no-deps --no-build-isolation --prefix=/opt/app . \
    && PYTHONPATH=/opt/app/lib/python3.11/site-packages python -c "import app.main"

# ---------------------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime
# cpu for the CPU image (no GPU probing); gpu for the GPU image (fails fast without one).
ARG DEVICE=cpu
LABEL org.opencontainers.image.title="vision-serving" \
      org.opencontainers.image.description="REST serving for an MNIST digit MLP and a pneumonia chest X-ray CNN (TensorFlow SavedModels)"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
       --shell /usr/sbin/nologin app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    KERAS_HOME=/tmp/.keras \
    VISION_SERVING_RUNTIME_CACHE_DIR=/tmp/vision-serving \
    VISION_SERVING_HOST=0.0.0.0 \
    VISION_SERVING_PORT=8000 \
    VISION_SERVING_MODEL_DIR=/srv/models \
    VISION_SERVING_DEVICE=${DEVICE}

# Largest and least often changed first: dependencies, then models, then the code.
COPY --from=builder /opt/venv /opt/venv
COPY models/ /srv/models/
COPY --from=builder /opt/app/ /opt/venv/

WORKDIR /srv
USER 10001:10001
EXPOSE 8000

# Liveness: /healthz answers as soon as uvicorn serves, while the models still load
# (readiness is /readyz). The slim image has no curl; urlopen raises on any non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VISION_SERVING_PORT', '8000'), timeout=4)"]

# Exec form, no shell: `python -m app` is PID 1 and receives SIGTERM itself; uvicorn
# drains requests (30 s at most), unloads the models and exits 0. Arguments given to
# `docker run IMAGE ...` are passed on, e.g. `--log-level debug`.
ENTRYPOINT ["python", "-m", "app"]
CMD []
