# masknet_server with the bundled demo model.
#   docker build -t masknet-server .
#   docker run -p 50051:50051 masknet-server
# Serve your own models by mounting a model root over /models.

FROM debian:bookworm-slim AS build
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
RUN scripts/install_deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DMASKNET_BUILD_TESTS=OFF \
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
EXPOSE 50051
# The server handles SIGTERM itself: it stops accepting, finishes calls in
# flight (--shutdown_grace_period) and exits 0.
ENTRYPOINT ["/usr/local/bin/masknet_server", "--model_root=/models"]
