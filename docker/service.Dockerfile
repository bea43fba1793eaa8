# hydrarec service: onnxruntime + FastAPI, no torch. Build from the repository root:
#   docker build -f docker/service.Dockerfile -t hydrarec-service .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first (a layer that changes only with pyproject.toml), then the code.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py \
    && /opt/venv/bin/pip install ".[serve]" \
    && rm -r service
COPY service/ service/
COPY eventstore/ eventstore/
RUN /opt/venv/bin/pip install --no-deps --force-reinstall .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 hydrarec
COPY --from=build /opt/venv /opt/venv
# The default model is baked in; mount another repository over /models to serve yours.
COPY --chown=10001:10001 models/ /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HYDRAREC_MODEL_DIR=/models \
    HYDRAREC_HOST=0.0.0.0 \
    HYDRAREC_PORT=8000
USER 10001
WORKDIR /home/hydrarec
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['HYDRAREC_PORT']}/readyz\", timeout=2)"]
ENTRYPOINT ["python", "-m", "service"]
