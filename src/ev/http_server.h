#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "ev/event_loop.h"
#include "net/unique_fd.h"

struct evhttp;
struct evhttp_request;

namespace iperf3proxy::ev {

// A small HTTP/1.1 server on a loop (libevent's evhttp): GET and HEAD on fixed paths, each
// answered by a handler that runs on the loop's thread, so it may read whatever that loop owns.
// For the proxy's /metrics, /healthz and /readyz: a few requests a minute from a scraper or a
// probe, each answered at once.
class HttpServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };

  using Handler = std::function<Response()>;

  explicit HttpServer(EventLoop& loop);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Answers GET (and HEAD) of `path` (the query string is ignored). Other paths get 404.
  void route(const std::string& path, Handler handler);

  // Serves HTTP on `listening` (a listening TCP socket; the server takes it). False with
  // `error` set if libevent cannot use it.
  bool serve(net::UniqueFd listening, std::string* error);

 private:
  struct EvHttpDeleter {
    void operator()(evhttp* http) const;
  };

  static void onRequest(evhttp_request* request, void* arg) noexcept;
  void answer(evhttp_request* request);

  std::unique_ptr<evhttp, EvHttpDeleter> http_;
  std::map<std::string, Handler, std::less<>> routes_;
};

}  // namespace iperf3proxy::ev
