# mqd on Debian 12, multi-stage:
#   docker build -t msg_queue .                                    # the broker (the last stage)
#   docker build --target services -t msg_queue_services .         # the integration templates
# The build stage runs the same scripts as the README's commands and CI (cmake/install-deps.sh,
# cmake/build-release.sh); tests/deploy checks that and runs those steps on every CI run (compiling
# as a Ninja dry run: the test tree compiles the same sources).
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN bash cmake/install-deps.sh && MQ_BUILD_ROOT=/build bash cmake/build-release.sh

# producer_service and consumer_service (examples/services): configured by the environment,
# HTTP (USE_HTTP_QUEUE=true) or Redis Streams.
FROM debian:bookworm-slim AS services
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libcpp-httplib0.11 libsimdjson14 libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/release/examples/services/producer_service /usr/local/bin/producer_service
COPY --from=build /build/release/examples/services/consumer_service /usr/local/bin/consumer_service
CMD ["/usr/local/bin/consumer_service"]

FROM debian:bookworm-slim AS mqd
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libcpp-httplib0.11 libssl3 libsimdjson14 libhiredis0.14 curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/release/mqd/mqd /usr/local/bin/mqd
ENV DATA_DIR=/root/data PORT=8080
VOLUME /root/data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" || exit 1
# docker stop sends SIGTERM to PID 1. The exec form makes mqd itself PID 1 (a shell would swallow
# the signal); mqd waits for SIGTERM/SIGINT with sigwait, ends its event streams, syncs its logs and
# exits 0 well within docker's 10 s grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mqd"]
