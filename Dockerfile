# The one Allezon image: every component runs from it (allezon gateway,
# allezon pipeline, allezon migrate). Build with `make image` (or
# `make image-debug` for -tags querydebug); see docs/deployment.md.
#
# Stage 1 builds a static binary (CGO_ENABLED=0: every dependency is pure
# Go); stage 2 is a pinned Alpine with that binary, run as an unprivileged
# user. Alpine rather than distroless: the stack's healthchecks use its
# busybox wget. Nothing is written outside /data (and only the embedded
# backends write there), so the services run with a read-only root.

ARG GO_VERSION=1.26.8
ARG ALPINE_VERSION=3.21.3

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# VERSION is stamped into the binary (allezon version); TAGS=querydebug
# makes the debug build that compares every query with its expected answer.
ARG VERSION=dev
ARG TAGS=
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -tags "${TAGS}" -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/allezon ./cmd/allezon \
 && /out/allezon version

FROM alpine:${ALPINE_VERSION}
ARG VERSION=dev
LABEL org.opencontainers.image.title="allezon" \
      org.opencontainers.image.description="Allezon ad-tech ingestion platform: gateway, pipeline, migrate" \
      org.opencontainers.image.version="${VERSION}"
RUN addgroup -S -g 10001 allezon \
 && adduser -S -D -H -u 10001 -G allezon -h /data allezon \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /out/allezon /usr/local/bin/allezon
USER 10001:10001
WORKDIR /data
ENV ALLEZON_DATA_DIR=/data \
    ALLEZON_LOG_FORMAT=json
# 8088: gateway API, /health, /metrics; 8089: pipeline /health, /metrics.
EXPOSE 8088 8089
ENTRYPOINT ["/usr/local/bin/allezon"]
CMD ["gateway"]
