# hydrarec training: CPU torch; writes a new model version into /models (the shared volume).
#   docker compose --profile train run --rm train
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    HYDRAREC_CACHE_DIR=/cache
WORKDIR /src
# The CPU build of torch (the default index would bring a multi-GB CUDA build).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY service/ service/
COPY eventstore/ eventstore/
COPY training/ training/
COPY configs/ configs/
RUN /opt/venv/bin/pip install ".[train]"
RUN useradd --create-home --uid 10001 hydrarec && mkdir /cache /models /reports \
    && chown hydrarec /cache /models /reports
USER 10001
ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["python", "-m", "training", "train", "--out", "/models", "--reports", "/reports"]
CMD ["--config", "configs/movielens.toml", "--data", "movielens", "--quiet"]
