# syntax=docker/dockerfile:1
#
# referrals-etl image: `docker build -t referrals-etl .`
#
#   docker run --rm -e REFERRALS_ETL_DATABASE_URL=... referrals-etl db upgrade
#   docker run --rm -e ... referrals-etl sync            (the default command)
#   docker run --rm -e ... referrals-etl schedule        (long-running, stops on SIGTERM)
#
# Two stages: the builder builds the project's wheel and installs it with the PostgreSQL and
# MySQL/MariaDB drivers into a virtualenv, then compiles its bytecode once; the final image is the
# same slim Python plus that virtualenv, with no compilers, no pip cache and a non-root user.
#
# - The base image is pinned to a patch release (bump it deliberately; for reproducible builds
#   pin its digest too: python:3.11.11-slim-bookworm@sha256:...).
# - No compiler anywhere: every dependency ships a wheel for linux amd64/arm64, and
#   --only-binary makes a dependency that stops shipping one fail the build loudly instead of
#   silently needing build tools. (If that ever happens, install build-essential in the builder
#   stage only.)
# - Bytecode is compiled at build time with unchecked hashes: the final image, with its
#   read-only root filesystem, loads the .pyc files as they are and never writes or re-checks
#   them at start.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- builder ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# README* matches nothing until the README exists; pyproject.toml names it as the readme.
COPY pyproject.toml README* LICENSE ./
COPY etl ./etl

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --only-binary=:all: \
        "$(ls /wheels/partner_referrals_etl-*.whl)[postgres,mysql]" \
    && /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/venv/lib

# The migrations are package data of `etl` (etl/migrations): fail the build here if the
# installed package could not find them.
RUN /opt/venv/bin/python -c "from etl.db import migrations_dir, head_revision; print('migrations', migrations_dir(), 'head', head_revision())"

# --- final image -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="referrals-etl" \
      org.opencontainers.image.description="Partner Center referrals into your own SQL database" \
      org.opencontainers.image.licenses="MIT"

# Same base image as the builder, so the virtualenv's interpreter path is valid here.
COPY --from=builder /opt/venv /opt/venv

# A fixed numeric uid/gid so that Kubernetes `runAsNonRoot` can verify it. The state
# directory holds the MSAL token cache (mount a volume there: refresh tokens rotate) and,
# with the default database.url, the SQLite file; it is also the working directory.
RUN groupadd --system --gid 10001 etl \
    && useradd --system --uid 10001 --gid etl --home-dir /var/lib/referrals-etl --no-create-home etl \
    && mkdir -p /var/lib/referrals-etl \
    && chown etl:etl /var/lib/referrals-etl

# PYTHONDONTWRITEBYTECODE: the bytecode was compiled in the builder; at run time nothing is
# written next to the code (the root filesystem is read-only in the shipped manifests).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/referrals-etl \
    REFERRALS_ETL_AUTH_TOKEN_CACHE_PATH=/var/lib/referrals-etl/token_cache.json

WORKDIR /var/lib/referrals-etl
USER 10001:10001

# Smoke test as the runtime user: the CLI starts and `db upgrade` will find the migrations.
RUN referrals-etl --version \
    && python -c "from etl.db import head_revision; print('schema head', head_revision())"

ENTRYPOINT ["referrals-etl"]
CMD ["sync"]
