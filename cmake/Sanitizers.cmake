# Maps PROXY_SANITIZE (a list such as "address;undefined") to compile and link flags for the
# whole build, so that every library and test runs under the same instrumentation.
if(PROXY_SANITIZE)
  list(JOIN PROXY_SANITIZE "," _proxy_sanitizers)
  add_compile_options(-fsanitize=${_proxy_sanitizers} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all -D_GLIBCXX_ASSERTIONS)
  add_link_options(-fsanitize=${_proxy_sanitizers})
endif()
