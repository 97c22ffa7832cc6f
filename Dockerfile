# syntax=docker/dockerfile:1
#
# One image for every gopcast role: `docker run IMAGE ingest|transcoder|packager|api|all`.
#
#   docker build -t gopcast .
#   docker run --rm -p 1935:1935 -p 8080:8080 gopcast          # every role, embedded NATS
#
# Build stage: the same `go build` as `go tool -modfile=tools/go.mod task build` (-trimpath,
# ./cmd/gopcast), plus -ldflags "-s -w" to drop the symbol table and DWARF (a smaller image, the
# same program).
# The Go version is go.mod's, exactly; GOTOOLCHAIN=local refuses to download another one.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
# Modules first, so a source change does not download them again. The product's only: go-task's
# (tools/go.mod) and the deployment tests' (deployments/go.mod) stay out of the image.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w" -o /out/gopcast ./cmd/gopcast

# Runtime: Debian slim with Debian's ffmpeg (libx264, the transcoder's encoder) and CA
# certificates for HTTPS S3 endpoints. Nothing else: no compiler, no package lists.
FROM debian:bookworm-slim
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="gopcast" \
      org.opencontainers.image.description="Live RTMP in, adaptive HLS/CMAF out of S3-compatible storage; one image for every role" \
      org.opencontainers.image.source="https://github.com/gopcast/gopcast" \
      org.opencontainers.image.url="https://github.com/gopcast/gopcast" \
      org.opencontainers.image.documentation="https://github.com/gopcast/gopcast#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gopcast \
    && useradd --system --uid 10001 --gid gopcast --home-dir /var/lib/gopcast --create-home \
       --shell /usr/sbin/nologin gopcast

COPY --from=build /out/gopcast /usr/local/bin/gopcast

# The data dir holds only the embedded NATS store and local media of `gopcast all`; split roles
# keep no state on disk. The transcoder writes chunk files under /tmp while ffmpeg runs.
ENV GOPCAST_DATA_DIR=/var/lib/gopcast/data
WORKDIR /var/lib/gopcast
USER 10001:10001

# RTMP (ingest, all) and HTTP (API, /healthz, /readyz, /metrics; every role).
EXPOSE 1935 8080

# The image has no curl or wget: bash (Essential in Debian, so in every slim image) opens the
# TCP connection itself (/dev/tcp) and asks /healthz on the port of GOPCAST_HTTP_ADDR (8080
# when unset). HTTP/1.0 makes the server close the connection after its answer; the check passes
# only on a 200 status line. A port set with --http-addr on the command line is not seen here:
# set GOPCAST_HTTP_ADDR instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "port=${GOPCAST_HTTP_ADDR##*:}; exec 3<>\"/dev/tcp/127.0.0.1/${port:-8080}\" || exit 1; printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3; IFS= read -r -t 4 status <&3 || exit 1; [[ $status == HTTP/1.[01]\\ 200* ]]"]

ENTRYPOINT ["gopcast"]
CMD ["all"]
