#!/usr/bin/env bash
# One command from a fresh Debian 12 machine (as root: the race testbed needs network
# namespaces): install what is missing, build, and run every test, then the whole suite again
# under AddressSanitizer and UndefinedBehaviorSanitizer.
#   scripts/test.sh           everything
#   scripts/test.sh --quick   one build, no sanitizer pass
# At the end it says how many tests were skipped and why (scripts/skip-summary.py), also when a
# suite failed. Under CI=true missing prerequisites fail instead of skipping (see README, Tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

skip_summaries=()
print_skip_summaries() {
  if ((${#skip_summaries[@]})); then
    printf '%s\n' "${skip_summaries[@]}"
  fi
}
trap print_skip_summaries EXIT

echo "== format check"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror

echo "== purity check: src/proto and src/roles use no sockets, no libevent, no clock, no logging"
if grep -nE '#include <(event2/|sys/socket|spdlog|chrono|netinet|unistd)' src/proto/* src/roles/*; then
  echo "purity check failed" >&2
  exit 1
fi

echo "== iperf3 versions for the version tests (integration/test_versions.py)"
# Builds the other iperf3 releases once into a cache outside the clone (a warm cache takes a
# second). Without the source archives it exits 3 and the version tests skip, saying why;
# under CI=true it fails instead.
versions_status=0
scripts/iperf3-versions.sh || versions_status=$?
if ((versions_status == 3)); then
  echo "(no iperf3 source archives: the version tests will be skipped)"
elif ((versions_status != 0)); then
  exit "$versions_status"
fi

run_suite() {
  local preset=$1
  shift
  echo "== build ($preset)"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  echo "== tests ($preset)"
  rm -rf "build/$preset/test-reports"
  local status=0
  ctest --test-dir "build/$preset" --output-on-failure --timeout 600 "$@" || status=$?
  skip_summaries+=("$(scripts/skip-summary.py "$preset" "build/$preset/test-reports")")
  return "$status"
}

run_suite ci
if [[ "${1:-}" != "--quick" ]]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # Everything again under the sanitizers, except the compatibility matrix, the version tests,
  # the race testbed's sweep and the control floods (labels matrix and once, see
  # integration/CMakeLists.txt), to keep the whole run well under 45 minutes on 2 cores.
  run_suite asan -LE "matrix|once"
fi
