# masknet_server with the bundled demo model.
#   docker build -t masknet-server .
#   docker run -p 50051:50051 -p 8080:8080 masknet-server
# Serve your own models by mounting a model root over /models; new versions
# published there are picked up while serving (--model_poll_interval).

FROM debian:bookworm-slim AS build
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
RUN scripts/install_deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
# The compiler cache persists between builds on one machine (CI rebuilds the
# image on every run).
RUN --mount=type=cache,target=/root/.cache/ccache \
    cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DMASKNET_BUILD_TESTS=OFF \
      -DMASKNET_BUILD_BENCHMARKS=OFF \
 && cmake --build /build -j "$(nproc)" --target masknet_server masknet_client masknet_loadgen

FROM debian:bookworm-slim
COPY scripts/install_deps.sh /tmp/install_deps.sh
RUN /tmp/install_deps.sh --runtime && rm -rf /var/lib/apt/lists/* /tmp/install_deps.sh \
 && useradd --system --uid 10001 --no-create-home masknet
COPY --from=build /build/server/masknet_server /build/tools/masknet_client /build/tools/masknet_loadgen \
     /usr/local/bin/
COPY models /models
USER masknet
# gRPC (Ranker, health, reflection); HTTP (/metrics, /healthz, /readyz).
EXPOSE 50051 8080
# Ready: a model is loaded and the server is not draining. Bash's /dev/tcp
# needs nothing the runtime image lacks.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# The server handles SIGTERM itself: it reports NOT_SERVING, stops accepting,
# finishes calls in flight (--shutdown_grace_period) and exits 0.
ENTRYPOINT ["/usr/local/bin/masknet_server", "--model_root=/models"]
