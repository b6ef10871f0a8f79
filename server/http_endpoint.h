#ifndef MASKNET_SERVER_HTTP_ENDPOINT_H_
#define MASKNET_SERVER_HTTP_ENDPOINT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace masknet {

// The operators' HTTP port (civetweb): Prometheus metrics and health for
// probes.
//   GET /metrics  the metrics in Prometheus text format
//   GET /healthz  200 "ok" while the process runs
//   GET /readyz   200 "ready", or 503 with the reason, as `ready` says
// Other paths are 404. Handlers run on civetweb's threads.
class HttpEndpoint {
 public:
  struct Options {
    std::string host = "0.0.0.0";
    int port = 8080;  // 0: any free port (see port())
    // Serving threads; probes and scrapes are few.
    int threads = 2;
    // The body of /metrics.
    std::function<std::string()> metrics;
    // Whether the server is ready; if not, sets *why.
    std::function<bool(std::string* why)> ready;
  };

  // Starts serving. Errors: UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const Options& options);
  // Stops serving (waits for requests in progress).
  ~HttpEndpoint();

  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  int port() const { return port_; }

 private:
  struct Context;
  explicit HttpEndpoint(const Options& options);

  std::unique_ptr<Context> context_;
  int port_ = 0;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_HTTP_ENDPOINT_H_
