#!/usr/bin/env bash
# Builds the other iperf3 releases the version tests run against (integration/
# test_versions.py), from unmodified upstream archives, into a cache outside the repository.
# They are test peers, never part of the product: nothing is built or copied inside the clone.
#
#   scripts/iperf3-versions.sh          build what is not cached yet, then print one line per
#                                       version: "VERSION /path/to/bin/iperf3"
#   scripts/iperf3-versions.sh --where  print where the archives and the cache are, build nothing
#
# Environment:
#   IPERF3_SRC_DIR        directory with iperf-X.Y.tar.gz archives. Default: the first of
#                         <repo>/../shared/iperf3-src and /work/shared/iperf3-src that exists.
#   IPERF3_VERSIONS_CACHE cache root (default /var/cache/iperf3-proxy/iperf3). Each build goes
#                         to <root>/<version>-<first 16 hex digits of the archive's sha256>, so a
#                         changed archive is rebuilt and an unchanged one is reused at once.
#   IPERF3_VERSIONS_REQUIRED  "true": missing archives are an error (exit 1). Otherwise they
#                         exit 3 with the reason on stderr, and the version tests skip with that
#                         reason, which scripts/test.sh repeats at the end of the run. (Not tied
#                         to CI=true: the archives are an input from outside the repository, and
#                         a CI machine without them must still test everything else.)
#
# Each build is static in the sense the archives' README uses (libiperf linked in,
# --disable-shared; glibc and OpenSSL stay the system's shared libraries) and has OpenSSL, so
# authentication works; a build without it is refused. About a minute per version on 2 cores.
# Concurrent runs (several developers, several worktrees) serialise on a lock in the cache.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${IPERF3_VERSIONS_CACHE:-/var/cache/iperf3-proxy/iperf3}
# Part of every cache entry: a change to how versions are built must not reuse old builds.
recipe="configure --disable-shared --with-openssl=/usr; make; bin/iperf3"
exit_not_found=3

log() { echo "iperf3-versions: $*" >&2; }

# The build directory and the half-installed cache entry of the build in progress, removed
# whatever way the script ends.
work=""
staging=""
cleanup() { rm -rf ${work:+"$work"} ${staging:+"$staging"}; }
trap cleanup EXIT

find_archives() {
  local candidates=()
  if [[ -n "${IPERF3_SRC_DIR:-}" ]]; then
    candidates=("$IPERF3_SRC_DIR") # set explicitly: no fallback to somewhere else
  else
    candidates=("$repo/../shared/iperf3-src" /work/shared/iperf3-src)
  fi
  local dir
  for dir in "${candidates[@]}"; do
    if compgen -G "$dir/iperf-*.tar.gz" >/dev/null; then
      (cd "$dir" && pwd)
      return 0
    fi
  done
  local reason="no iperf3 source archives (iperf-X.Y.tar.gz) in ${candidates[*]}"
  reason+="; set IPERF3_SRC_DIR to the directory that holds them"
  if [[ "${IPERF3_VERSIONS_REQUIRED:-}" == "true" ]]; then
    log "error: $reason (required: IPERF3_VERSIONS_REQUIRED=true)"
    exit 1
  fi
  log "$reason"
  exit "$exit_not_found"
}

# Version from the archive name: iperf-3.18.tar.gz -> 3.18.
version_of() {
  local name
  name=$(basename "$1" .tar.gz)
  echo "${name#iperf-}"
}

# Builds one archive into the cache entry $2 unless it is there already.
build_one() {
  local archive=$1 entry=$2 version
  version=$(version_of "$archive")
  if [[ -x "$entry/bin/iperf3" && "$(cat "$entry/recipe" 2>/dev/null)" == "$recipe" ]]; then
    return 0
  fi
  work=$(mktemp -d "${TMPDIR:-/tmp}/iperf3-build-$version.XXXXXX")
  log "building iperf $version from $archive (log: $work/build.log while it runs)"
  local started=$SECONDS
  tar -xzf "$archive" -C "$work"
  local src="$work/iperf-$version"
  if ! (cd "$src" && ./configure --disable-shared --with-openssl=/usr &&
    make -j"$(nproc)") >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    log "error: building iperf $version failed"
    exit 1
  fi
  staging="$entry.partial.$$"
  rm -rf "$staging"
  install -D -m 0755 "$src/src/iperf3" "$staging/bin/iperf3"
  "$staging/bin/iperf3" --version >"$staging/version.txt" 2>&1 || true
  if ! grep -q "authentication" "$staging/version.txt"; then
    cat "$staging/version.txt" >&2
    log "error: iperf $version was built without OpenSSL (authentication); install libssl-dev"
    exit 1
  fi
  if ! grep -q "^iperf $version\b" "$staging/version.txt"; then
    log "error: $archive built '$(head -n 1 "$staging/version.txt")', not iperf $version"
    exit 1
  fi
  echo "$recipe" >"$staging/recipe"
  sha256sum "$archive" >"$staging/archive.sha256"
  rm -rf "$entry"
  mv "$staging" "$entry" # a half-written build never looks like a cached one
  staging=""
  rm -rf "$work"
  work=""
  log "built iperf $version in $((SECONDS - started)) s -> $entry/bin/iperf3"
}

main() {
  local src_dir
  src_dir=$(find_archives)
  if [[ "${1:-}" == "--where" ]]; then
    echo "archives: $src_dir"
    echo "cache: $cache_root"
    return 0
  fi
  mkdir -p "$cache_root"
  exec 9>"$cache_root/.lock"
  flock 9
  local archive version sha entry found=()
  for archive in "$src_dir"/iperf-*.tar.gz; do
    version=$(version_of "$archive")
    sha=$(sha256sum "$archive" | cut -c1-16)
    entry="$cache_root/$version-$sha"
    build_one "$archive" "$entry"
    found+=("$version $entry/bin/iperf3")
  done
  printf '%s\n' "${found[@]}" | sort -V
}

main "$@"
