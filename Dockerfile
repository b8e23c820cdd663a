# Reproducible conversion: pinned Python, pinned TensorFlow / LiteRT / tf-keras (see pyproject.toml).
#   docker build -t edgepipe .
#   docker run --rm -v "$PWD:/work" edgepipe convert /work/model.keras --calib /work/calib --out /work/out
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/edgepipe
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY targets ./targets
COPY calibration_data ./calibration_data
RUN pip install ".[qat]" && edgepipe targets

WORKDIR /work
ENTRYPOINT ["edgepipe"]
CMD ["--help"]
