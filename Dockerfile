# edgepipe in a container: exactly the packages of requirements.lock, hash-checked (the set
# `make venv` installs), then edgepipe itself; `edgepipe targets` and the fast test tier run at
# build time. Runs as a non-root user; any uid works (--user "$(id -u):$(id -g)").
#   docker build -t edgepipe .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" edgepipe demo --out /work/demo-out --overwrite
# Without a registry, `make docker-check` builds it with podman on a base made by mmdebstrap
# (docker/check.sh): --build-arg BASE=localhost/edgepipe-base:bookworm. A BASE must be Debian
# bookworm with Python 3.11 whose `python` and `pip` come first on PATH, as in the official image.
ARG BASE=python:3.11.7-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=2 \
    EDGEPIPE_IN_CONTAINER=1 \
    HOME=/home/edgepipe

# The image's user, and a HOME and /work that any uid can write to (matplotlib's and Keras'
# caches go to $HOME), for runs as the caller's uid, which has no passwd entry here.
RUN echo 'edgepipe:x:10001:10001:edgepipe:/home/edgepipe:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'edgepipe:x:10001:' >> /etc/group \
    && mkdir -p /home/edgepipe /work \
    && chmod 1777 /home/edgepipe /work

WORKDIR /opt/edgepipe
# The lock stays at this path: the run report records its sha256 (pipeline/core/environment.py).
COPY requirements.lock ./
RUN python -m pip install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md ./
COPY edgecore ./edgecore
COPY pipeline ./pipeline
COPY targets ./targets
COPY calibration_data ./calibration_data
RUN python -m pip install --no-deps --no-build-isolation . \
    && rm -rf build edgepipe.egg-info

# The fast tier (no TensorFlow at run time, seconds) against the installed package: -P keeps
# /opt/edgepipe, where the sources are, off sys.path. Caches go to a scratch HOME, not the image.
COPY tests ./tests
USER 10001:10001
RUN scratch="$(mktemp -d)" \
    && HOME="$scratch" edgepipe targets \
    && HOME="$scratch" python -P -m pytest -q -m fast -p no:cacheprovider --basetemp "$scratch/pytest" tests \
    && rm -rf "$scratch"

WORKDIR /work
ENTRYPOINT ["edgepipe"]
CMD ["--help"]
