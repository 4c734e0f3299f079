#!/usr/bin/env bash
# Build kuberank's two images from ./Dockerfile with buildah, with no registry, and write them as
# OCI archives (uncompressed layers) that `ctr -n k8s.io images import`, `podman load` and
# `kind load image-archive` read:
#   $KUBERANK_CACHE/images/kuberank-operator-<hash>.oci.tar   (operator + sidecar, no torch)
#   $KUBERANK_CACHE/images/kuberank-inference-<hash>.oci.tar  (inference + packaged MiniLM)
# <hash> covers the Dockerfile, this script, the base and every file the image is built from
# (git ls-files of the copied paths), so an unchanged tree rebuilds nothing.
# Steps, each cached by its inputs:
#   1. containers.conf / storage.conf / registries.conf under $KUBERANK_CACHE/containers
#      (runc, cgroupfs, no default ulimits: what works on a hybrid-cgroup host; nothing in /etc)
#   2. the base: Debian bookworm + python3 + python3-venv, made with mmdebstrap from Debian's
#      archive and imported (the Dockerfile's default base, python:3.11-slim-bookworm, needs a
#      registry: set KUBERANK_BASE_IMAGE to use it or any other base instead)
#   3. a wheelhouse of every pinned dependency (pip download on the host; torch is ~3 GB once)
#   4. buildah bud --target operator / inference, offline from the wheelhouse
#   5. podman save --format oci-archive --uncompressed (index.json whose manifest carries the
#      annotation org.opencontainers.image.ref.name = the full image name, e.g.
#      ghcr.io/kuberank/kuberank-operator:0.1.0)
# Prints the archive paths and the image sizes. Env:
#   KUBERANK_IMAGE_REGISTRY  registry/prefix of the image names (default ghcr.io/kuberank)
#   KUBERANK_IMAGE_TAG       tag (default: the chart's appVersion)
#   KUBERANK_BASE_IMAGE      base image already in the local store (skips mmdebstrap)
#   KUBERANK_IMAGES          which images (default "operator inference")
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${KUBERANK_CACHE:-$HOME/.cache/kuberank}
registry=${KUBERANK_IMAGE_REGISTRY:-ghcr.io/kuberank}
tag=${KUBERANK_IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/kuberank/Chart.yaml)}
targets=${KUBERANK_IMAGES:-operator inference}
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
mkdir -p "$cache/images" "$cache/containers" "$cache/wheels"

# Bump when the way images are built changes in a way the inputs below do not show.
recipe=2
t_start=$SECONDS
step() { printf '==> [%3ss] %s\n' "$((SECONDS - t_start))" "$*"; }
sha() { sha256sum | cut -c1-16; }

# Background helpers (a build, its heartbeat) and temporary files go with the script, also when
# it fails or is interrupted.
pids=()
temps=()
cleanup() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  [ ${#temps[@]} -eq 0 ] || rm -rf "${temps[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One build at a time per cache (worktrees and make share the image store).
exec 9>"$cache/images/.lock"
if ! flock -n 9; then
  echo "==> waiting for another hack/build-images.sh (lock $cache/images/.lock)"
  flock 9
fi

# --- 1. tools and configuration -----------------------------------------------------------
for tool in buildah podman mmdebstrap; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing: run hack/install-system-deps.sh (make system-deps)" >&2
    exit 1
  }
done
conf=$cache/containers
cat >"$conf/containers.conf.new" <<'EOF'
# Written by hack/build-images.sh. crun refuses hybrid cgroups; the default ulimits cannot be
# raised without CAP_SYS_RESOURCE.
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat >"$conf/storage.conf.new" <<EOF
# Written by hack/build-images.sh: kuberank's own image store, apart from /var/lib/containers.
[storage]
driver = "overlay"
graphroot = "$conf/storage"
runroot = "$conf/run"
EOF
cat >"$conf/registries.conf.new" <<'EOF'
# Written by hack/build-images.sh: short names resolve nowhere, so nothing is pulled by accident.
unqualified-search-registries = []
short-name-mode = "enforcing"
EOF
for f in containers storage registries; do mv "$conf/$f.conf.new" "$conf/$f.conf"; done
export CONTAINERS_CONF=$conf/containers.conf
export CONTAINERS_STORAGE_CONF=$conf/storage.conf
export CONTAINERS_REGISTRIES_CONF=$conf/registries.conf
export BUILDAH_LAYERS=true

# --- 2. the base ----------------------------------------------------------------------------
mirror=${KUBERANK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${KUBERANK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
base_pkgs="python3,python3-venv,ca-certificates"
if [ -n "${KUBERANK_BASE_IMAGE:-}" ]; then
  base=$KUBERANK_BASE_IMAGE
  step "base: $base (KUBERANK_BASE_IMAGE)"
else
  # Keyed by what goes in; a new day's security update is picked up by deleting the archive.
  base_hash=$(printf '%s\n' bookworm minbase "$base_pkgs" "$mirror" "$security" v1 | sha)
  base=localhost/kuberank/base-bookworm-python:$base_hash
  base_tar=$cache/images/base-bookworm-python-$base_hash.tar
  if podman image exists "$base"; then
    step "base: $base (cached)"
  else
    if [ ! -s "$base_tar" ]; then
      step "base: mmdebstrap bookworm ($base_pkgs) from $mirror (about a minute)"
      temps+=("$base_tar.tmp")
      set +e
      mmdebstrap --variant=minbase --include="$base_pkgs" --format=tar \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$base_tar.tmp" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" 2>&1 | grep --line-buffered -E '^(I: (running|creating|installing|extracting|cleaning)|E: )'
      rc=${PIPESTATUS[0]}
      set -e
      [ "$rc" -eq 0 ] && [ -s "$base_tar.tmp" ] || { echo "mmdebstrap failed (exit $rc)" >&2; exit 1; }
      mv "$base_tar.tmp" "$base_tar"
    fi
    step "base: import $base_tar"
    podman import --quiet --change 'CMD ["python3"]' "$base_tar" "$base" >/dev/null
  fi
fi

# --- 3. wheelhouse --------------------------------------------------------------------------
# Every dependency of both images (and the build backend), downloaded once by the host's pip for
# the same interpreter (cp311, manylinux): the builds then run pip with --no-index.
wheels_hash=$(cat constraints.txt pyproject.toml hack/extra-requirements.py | sha)
wheels=$cache/wheels
if [ "$(cat "$wheels/.stamp" 2>/dev/null)" = "$wheels_hash" ]; then
  step "wheelhouse: $wheels (cached)"
else
  step "wheelhouse: pip download into $wheels (cold: torch and CUDA libraries, ~3 GB)"
  reqs=$(mktemp)
  temps+=("$reqs")
  "$python" hack/extra-requirements.py pyproject.toml operator sidecar inference model-minilm >"$reqs"
  printf '%s\n' pip 'setuptools>=69' >>"$reqs"
  "$python" -m pip download --progress-bar off -q -d "$wheels" -c constraints.txt -r "$reqs"
  echo "$wheels_hash" >"$wheels/.stamp"
fi

# --- 4./5. images ---------------------------------------------------------------------------
# The build context is a copy of exactly the files the image is made from (git ls-files), so no
# __pycache__, venv or untracked build output gets in, and the hash names exactly that content.
inputs=(Dockerfile pyproject.toml constraints.txt hack/extra-requirements.py operator sidecar inference)
mapfile -t files < <(git ls-files -co --exclude-standard -- "${inputs[@]}" | sort -u)
tree_hash=$({
  printf '%s\n' "$recipe" "$base" "$registry" "$tag"
  for f in "${files[@]}"; do [ -f "$f" ] && sha256sum "$f"; done
} | sha)
context=$cache/images/context-$tree_hash
if [ ! -d "$context" ]; then
  temps+=("$context.tmp")
  rm -rf "$context.tmp" && mkdir -p "$context.tmp"
  for f in "${files[@]}"; do [ -f "$f" ] && install -D -m 0644 "$f" "$context.tmp/$f"; done
  mv "$context.tmp" "$context"
fi

for target in $targets; do
  name=kuberank-$target
  ref=$registry/$name:$tag
  archive=$cache/images/$name-$tree_hash.oci.tar
  # The tag in the store may be another tree's build (another worktree): the label says.
  built=$(podman image inspect --format '{{index .Labels "dev.kuberank.content-hash"}}' "$ref" 2>/dev/null || true)
  if [ -s "$archive" ] && [ "$built" = "$tree_hash" ]; then
    step "$ref: cached ($archive)"
    continue
  fi
  if [ ! -s "$archive" ]; then
    step "$ref: buildah bud --target $target (the step lines, a heartbeat each minute; log $cache/images/build-$target.log)"
    t0=$SECONDS
    log=$cache/images/build-$target.log
    (while sleep 60; do printf '    ... %s: %ss\n' "$ref" "$((SECONDS - t0))"; done) &
    beat=$!
    pids+=("$beat")
    set +e
    buildah bud --target "$target" --pull=never --network=host --format=oci \
      --build-arg BASE_IMAGE="$base" \
      --build-arg PIP_FIND_LINKS=/tmp/kuberank-wheelhouse --build-arg PIP_NO_INDEX=1 \
      -v "$wheels:/tmp/kuberank-wheelhouse:ro" \
      --label org.opencontainers.image.source=https://github.com/kuberank/kuberank \
      --label org.opencontainers.image.version="$tag" \
      --label dev.kuberank.content-hash="$tree_hash" \
      -f "$context/Dockerfile" -t "$ref" "$context" >"$log" 2>&1 &
    build=$!
    pids+=("$build")
    tail -n +1 -f --pid="$build" "$log" | grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]+/[0-9]+: (FROM|RUN|COPY)' | cut -c1-140
    wait "$build"
    rc=$?
    set -e
    kill "$beat" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
      tail -n 40 "$log" >&2
      echo "build of $ref failed (exit $rc); the whole log: $log" >&2
      exit 1
    fi
    step "$ref: built in $((SECONDS - t0))s; writing $archive"
    # Uncompressed layers: gzip of torch's CUDA libraries alone takes minutes on two cores.
    temps+=("$archive.tmp")
    podman save --quiet --uncompressed --format oci-archive -o "$archive.tmp" "$ref"
    mv "$archive.tmp" "$archive"
  else
    step "$ref: podman load $archive (the store holds another build under this tag)"
    podman load --quiet -i "$archive" >/dev/null
  fi
  # Older archives of this image are superseded.
  find "$cache/images" -maxdepth 1 -name "$name-*.oci.tar" ! -name "$(basename "$archive")" -delete
  ln -sfn "$(basename "$archive")" "$cache/images/$name.oci.tar"
done
# Contexts of older trees are not needed any more.
find "$cache/images" -maxdepth 1 -name 'context-*' ! -name "context-$tree_hash" -exec rm -rf {} +

step "images (uncompressed size):"
for target in $targets; do
  ref=$registry/kuberank-$target:$tag
  size=$(podman image inspect --format '{{.Size}}' "$ref")
  printf '    %-52s %6s MB  %s\n' "$ref" "$((size / 1000000))" "$cache/images/kuberank-$target-$tree_hash.oci.tar"
done
echo "==> import into a node: ctr -n k8s.io images import ARCHIVE; kind: kind load image-archive ARCHIVE"
