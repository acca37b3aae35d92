#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root: the race testbed needs network
# namespaces): install what is missing, build, and run every test, then the whole suite again
# under AddressSanitizer and UndefinedBehaviorSanitizer.
#   scripts/test.sh           everything
#   scripts/test.sh --quick   one build, no sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== format check"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror

echo "== purity check: src/proto and src/roles use no sockets, no libevent, no clock, no logging"
if grep -nE '#include <(event2/|sys/socket|spdlog|chrono|netinet|unistd)' src/proto/* src/roles/*; then
  echo "purity check failed" >&2
  exit 1
fi

run_suite() {
  local preset=$1
  shift
  echo "== build ($preset)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "== tests ($preset)"
  ctest --test-dir "build/$preset" --output-on-failure --timeout 600 "$@"
}

run_suite ci
if [[ "${1:-}" != "--quick" ]]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # Everything again under the sanitizers, except the compatibility matrix (see
  # integration/CMakeLists.txt).
  run_suite asan -LE matrix
fi
