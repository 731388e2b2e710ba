# The one image of cdr-mediation: every workload in k8s/ runs it with a `cdrmed` subcommand.
# Build: docker build -t cdr-mediation:dev .
# Production pins the base images below by digest in the release pipeline, as k8s/overlays/prod
# pins this image by digest.

# Wheels are built in a throw-away stage, so compilers never reach the runtime image.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cdr_mediation ./cdr_mediation
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# libsofthsm2: the PKCS#11 module CDR_HSM_MODULE points at by default (a SoftHSM2 token for
# development; production points at its network HSM's module, docs/deployment.md "HSM").
# No other system package is needed at run time: asyncpg, rocksdict, python-pkcs11 and
# cryptography ship manylinux wheels.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libsofthsm2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cdr \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/cdr --create-home --shell /usr/sbin/nologin cdr
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels cdr-mediation \
 && rm -rf /wheels
# The root filesystem is read-only in Kubernetes: no bytecode written at run time, and logs go
# to stderr unbuffered (JSON lines).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so the kubelet can check runAsNonRoot against it (k8s/base: runAsUser 10001).
USER 10001:10001
WORKDIR /home/cdr
# Liveness and readiness are the Kubernetes probes (k8s/base); a Docker HEALTHCHECK would have no
# single endpoint to ask, since which port a process serves depends on its subcommand.
HEALTHCHECK NONE
ENTRYPOINT ["cdrmed"]
CMD ["--help"]
