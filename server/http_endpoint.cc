#include "server/http_endpoint.h"

#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "civetweb.h"

namespace masknet {
namespace {

void Reply(mg_connection* connection, int status, const char* content_type, const std::string& body) {
  const char* reason = status == 200 ? "OK" : status == 503 ? "Service Unavailable" : "Not Found";
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n",
            status, reason, content_type, body.size());
  mg_write(connection, body.data(), body.size());
}

}  // namespace

struct HttpEndpoint::Context {
  Options options;
  mg_context* server = nullptr;

  ~Context() {
    if (server != nullptr) mg_stop(server);
  }

  static int Handle(mg_connection* connection, void* data) {
    const Context& self = *static_cast<const Context*>(data);
    const mg_request_info* request = mg_get_request_info(connection);
    const std::string path = request->local_uri != nullptr ? request->local_uri : "";
    if (std::strcmp(request->request_method, "GET") != 0 && std::strcmp(request->request_method, "HEAD") != 0) {
      Reply(connection, 404, "text/plain", "only GET\n");
    } else if (path == "/metrics") {
      Reply(connection, 200, "text/plain; version=0.0.4; charset=utf-8", self.options.metrics());
    } else if (path == "/healthz") {
      Reply(connection, 200, "text/plain", "ok\n");
    } else if (path == "/readyz") {
      std::string why;
      if (self.options.ready(&why)) {
        Reply(connection, 200, "text/plain", "ready\n");
      } else {
        Reply(connection, 503, "text/plain", absl::StrCat("not ready: ", why, "\n"));
      }
    } else {
      Reply(connection, 404, "text/plain", "not found: /metrics, /healthz and /readyz are served\n");
    }
    return 1;  // handled
  }
};

HttpEndpoint::HttpEndpoint(const Options& options) : context_(std::make_unique<Context>()) {
  context_->options = options;
}

HttpEndpoint::~HttpEndpoint() = default;

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const Options& options) {
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(0); });
  std::unique_ptr<HttpEndpoint> endpoint(new HttpEndpoint(options));
  const std::string listen = absl::StrCat(options.host, ":", options.port);
  const std::string threads = absl::StrCat(options.threads);
  const char* civet_options[] = {"listening_ports", listen.c_str(), "num_threads", threads.c_str(),
                                 "enable_keep_alive", "no", nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = [](const mg_connection*, const char*) { return 1; };  // quiet: errors come back below
  endpoint->context_->server = mg_start(&callbacks, nullptr, civet_options);
  if (endpoint->context_->server == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", listen));
  }
  mg_set_request_handler(endpoint->context_->server, "/", &Context::Handle, endpoint->context_.get());
  mg_server_port ports[4];
  const int n = mg_get_server_ports(endpoint->context_->server, 4, ports);
  if (n < 1) return absl::UnavailableError(absl::StrCat("HTTP server on ", listen, " reports no port"));
  endpoint->port_ = ports[0].port;
  return endpoint;
}

}  // namespace masknet
