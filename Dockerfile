# syntax=docker/dockerfile:1
# Reel: reeld (server), reelctl (CLI), reel-bench (load generator).
#   docker build -t reel .
#   docker run --rm -p 50051:50051 -p 9464:9464 -p 8080:8080 reel \
#     --database-url postgresql://USER@HOST:5432/reel   (or -e REEL_DATABASE_URL=...)

# ---- build ----
# The toolchain the project is built and tested with (Swift 6.3 on Debian 12).
FROM swift:6.3-bookworm AS build
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      libnghttp2-dev libpq-dev libcurl4-openssl-dev libprotobuf-c-dev libssl-dev \
      protobuf-c-compiler protobuf-compiler pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The Swift runtime is linked statically so the runtime image needs only the C libraries.
# Resource bundles (Reel_ReelWeb.resources: the dashboard's files) go next to the binaries,
# where Bundle.module looks for them.
RUN swift build -c release --static-swift-stdlib \
 && bin="$(swift build -c release --static-swift-stdlib --show-bin-path)" \
 && mkdir -p /out \
 && cp "$bin/reeld" "$bin/reelctl" /out/ \
 && cp -R "$bin"/*.resources /out/ \
 && if [ -x "$bin/reel-bench" ]; then cp "$bin/reel-bench" /out/; fi

# ---- runtime ----
FROM debian:bookworm-slim
# The libraries reeld links and ffmpeg, which post-processing (ffmpeg, ffprobe) and the simulated
# provider's media run. Tests/interop/test_docker_image.py holds this list against `ldd reeld`.
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      libnghttp2-14 libpq5 libcurl4 libprotobuf-c1 libssl3 libstdc++6 ffmpeg ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin reel
COPY --from=build /out/ /usr/local/bin/
USER reel
ENV REEL_LISTEN=0.0.0.0:50051 \
    REEL_METRICS_LISTEN=0.0.0.0:9464 \
    REEL_HTTP_LISTEN=0.0.0.0:8080 \
    REEL_PROVIDER=simulated
EXPOSE 50051 9464 8080
ENTRYPOINT ["/usr/local/bin/reeld"]
