#include "ev/http_server.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

namespace iperf3proxy::ev {
namespace {

// A scraper or a probe that opens a connection and says nothing is dropped after this long.
constexpr int kIdleTimeoutSeconds = 10;
// Requests are a line and a few headers; nothing legitimate sends a body.
constexpr ev_ssize_t kMaxHeadersBytes = 8192;
constexpr ev_ssize_t kMaxBodyBytes = 0;

const char* reasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 404:
      return "Not Found";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

}  // namespace

void HttpServer::EvHttpDeleter::operator()(evhttp* http) const {
  evhttp_free(http);
}

HttpServer::HttpServer(EventLoop& loop) : http_(evhttp_new(loop.base())) {
  evhttp_set_allowed_methods(http_.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  evhttp_set_timeout(http_.get(), kIdleTimeoutSeconds);
  evhttp_set_max_headers_size(http_.get(), kMaxHeadersBytes);
  evhttp_set_max_body_size(http_.get(), kMaxBodyBytes);
  evhttp_set_gencb(http_.get(), &HttpServer::onRequest, this);
}

HttpServer::~HttpServer() = default;

void HttpServer::route(const std::string& path, Handler handler) {
  routes_[path] = std::move(handler);
}

bool HttpServer::serve(net::UniqueFd listening, std::string* error) {
  // On success evhttp owns the socket (and closes it when freed).
  if (evhttp_accept_socket_with_handle(http_.get(), listening.get()) == nullptr) {
    *error = "evhttp cannot accept on the socket";
    return false;
  }
  (void)listening.release();
  return true;
}

void HttpServer::onRequest(evhttp_request* request, void* arg) noexcept {
  static_cast<HttpServer*>(arg)->answer(request);
}

void HttpServer::answer(evhttp_request* request) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  Response response;
  if (auto it = routes_.find(path != nullptr ? path : ""); it != routes_.end()) {
    response = it->second();
  } else {
    response.status = 404;
    response.body = "not found; try /metrics, /healthz or /readyz\n";
  }
  evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Type",
                    response.content_type.c_str());
  evbuffer_add(evhttp_request_get_output_buffer(request), response.body.data(),
               response.body.size());
  evhttp_send_reply(request, response.status, reasonPhrase(response.status), nullptr);
}

}  // namespace iperf3proxy::ev
