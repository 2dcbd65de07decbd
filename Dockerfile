# Multi-stage build of mqd on Debian 12. The build stage runs the same dependency script as the
# README's commands and CI.
FROM debian:bookworm AS build
WORKDIR /src
COPY . .
RUN bash cmake/install-deps.sh \
 && cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_BUILD_TESTS=OFF -DMQ_BUILD_BENCH=OFF \
 && cmake --build /build --target mqd

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcpp-httplib0.11 libsimdjson14 curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/mqd/mqd /usr/local/bin/mqd
ENV DATA_DIR=/root/data PORT=8080
VOLUME /root/data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# mqd is PID 1 and handles SIGTERM itself (docker stop).
ENTRYPOINT ["/usr/local/bin/mqd"]
