#!/usr/bin/env bash
# Build the local control plane's binaries from pinned Go modules (hack/go/*) into
# $KUBERANK_CACHE/bin/<name>-<version>/. A warm run (every binary present) is a no-op.
# Each set is built into a temporary directory and renamed into place, so an interrupted build
# never leaves a half-filled cache. Go's build and module caches are kept between runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=go/versions.env
source "$here/go/versions.env"
cache=${KUBERANK_CACHE:-$HOME/.cache/kuberank}
bin_root="$cache/bin"
mkdir -p "$bin_root"

export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"

have_all() { # dir binary...
  local dir=$1 b
  shift
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

require_go() {
  if ! command -v go >/dev/null; then
    echo "error: 'go' is not on PATH; install Go 1.24 or newer (https://go.dev/dl/) and rerun 'make tools'" >&2
    exit 1
  fi
}

version_of() { # binary -> the line that names its version
  case $(basename "$1") in
    kubectl) "$1" version --client ;;
    helm) "$1" version --short ;;
    adapter) go version -m "$1" | awk '$2 == "sigs.k8s.io/prometheus-adapter" {print $2, $3}' ;; # no --version flag
    *) "$1" --version ;;
  esac 2>&1 | head -n 1
}

# build_set NAME VERSION MODULE_DIR MAIN_MODULE LDFLAGS EXPECTED_VERSION_TEXT ESTIMATE PKG=BINARY...
# @BUILD_DATE@ in LDFLAGS becomes MAIN_MODULE's release time, so rebuilds are reproducible.
build_set() {
  local name=$1 version=$2 moddir=$3 main_module=$4 ldflags=$5 expect=$6 estimate=$7
  shift 7
  local dest="$bin_root/$name-$version" binaries=() pkgs=() spec
  for spec in "$@"; do
    pkgs+=("${spec%%=*}")
    binaries+=("${spec##*=}")
  done
  if have_all "$dest" "${binaries[@]}"; then
    echo "==> $name $version: cached in $dest"
    return 0
  fi
  require_go
  local tmp
  tmp=$(mktemp -d "$bin_root/.tmp-$name-$version.XXXXXX")
  chmod 755 "$tmp" # mktemp makes it private; the cache is shared like any bin directory
  # shellcheck disable=SC2064  # expand $tmp now: the trap removes this run's directory
  trap "rm -rf '$tmp'" EXIT
  # a Go older than the module's `go` line fetches the toolchain it needs (GOTOOLCHAIN=auto)
  echo "==> building ${binaries[*]} $version (first run: $estimate)"
  local start=$SECONDS date
  cd "$here/go/$moddir"
  date=$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$main_module")
  # its own process group, so an interrupt stops the compilers and linkers too and nothing
  # writes into $tmp after the EXIT trap removed it
  setsid go build -trimpath -ldflags "-s -w ${ldflags//@BUILD_DATE@/$date}" -o "$tmp/" "${pkgs[@]}" &
  local build=$!
  # shellcheck disable=SC2064  # expand $build now
  trap "kill -TERM -- -$build 2>/dev/null; wait $build; exit 130" INT TERM
  wait "$build"
  trap - INT TERM
  cd "$here"
  local b got
  for b in "${binaries[@]}"; do
    got=$(version_of "$tmp/$b" || true)
    case $got in
      *"$expect"*) ;;
      *)
        echo "error: $b reports '$got', expected '$expect' (check its ldflags in hack/build-tools.sh)" >&2
        exit 1
        ;;
    esac
  done
  rm -rf "$dest" # an incomplete set left by an older layout
  mv "$tmp" "$dest"
  trap - EXIT
  echo "==> $name $version built in $((SECONDS - start))s: $dest"
}

# Two `make tools` at once (parallel sessions, CI retries) must not build the same set twice.
exec 9>"$bin_root/.build.lock"
if ! flock -n 9; then
  echo "==> waiting for another hack/build-tools.sh to finish (lock $bin_root/.build.lock)"
  flock 9
fi
# half-built sets of a build that was killed (the lock says none is running now)
find "$bin_root" -mindepth 1 -maxdepth 1 -name '.tmp-*' -exec rm -rf {} +

build_set etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3 "" "${ETCD_VERSION#v}" "~2 min on 2 cores" .=etcd

k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  # what kubernetes' hack/lib/version.sh sets, so /version reports the release, not v0.0.0
  k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.gitCommit= -X $pkg.buildDate=@BUILD_DATE@"
done
build_set k8s "$K8S_VERSION" kubernetes k8s.io/kubernetes "$k8s_ldflags" "$K8S_VERSION" "~8 min on 2 cores" \
  k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler=kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl=kubectl

# The local cluster's real node (localcluster/realnode.py): the same module and ldflags as the
# control plane, a set of its own so the control plane's cached set is not rebuilt for it
build_set k8s-node "$K8S_VERSION" kubernetes k8s.io/kubernetes "$k8s_ldflags" "$K8S_VERSION" "~6 min on 2 cores" \
  k8s.io/kubernetes/cmd/kubelet=kubelet \
  k8s.io/kubernetes/cmd/kube-proxy=kube-proxy

build_set kwok "$KWOK_VERSION" kwok sigs.k8s.io/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
  "$KWOK_VERSION" "~3 min on 2 cores" sigs.k8s.io/kwok/cmd/kwok=kwok

# helm's Makefile derives its default Capabilities.KubeVersion from the client-go it is built with
helm_client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$here/go/helm/go.mod") # v0.37.0
helm_k8s_minor=${helm_client_go#v0.}
helm_k8s_minor=${helm_k8s_minor%%.*}
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done
build_set helm "$HELM_VERSION" helm helm.sh/helm/v3 "$helm_ldflags" "$HELM_VERSION" "~2 min on 2 cores" \
  helm.sh/helm/v3/cmd/helm=helm

# Prometheus 3.x is module v0.3xx.y: v0.316.0 is release 3.16.0
prom_minor=${PROMETHEUS_VERSION#v0.}
prom_patch=${prom_minor#*.}
prom_minor=${prom_minor%%.*}
prom_release="${prom_minor:0:1}.$((10#${prom_minor:1})).$prom_patch"
prom_ldflags="-X github.com/prometheus/common/version.Version=$prom_release"
prom_ldflags+=" -X github.com/prometheus/common/version.Revision=$PROMETHEUS_VERSION"
prom_ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
prom_ldflags+=" -X github.com/prometheus/common/version.BuildUser=kuberank"
prom_ldflags+=" -X github.com/prometheus/common/version.BuildDate=@BUILD_DATE@"
# Prometheus' documented build tags: no optional service discovery but kubernetes (file_sd and
# http_sd stay), which skips the cloud SDKs; no builtinassets tag, so no web UI assets either
GOFLAGS="$GOFLAGS -tags=remove_all_sd,enable_kubernetes_sd" \
  build_set prometheus "$PROMETHEUS_VERSION" prometheus github.com/prometheus/prometheus \
  "$prom_ldflags" "version $prom_release" "~7 min on 2 cores" \
  github.com/prometheus/prometheus/cmd/prometheus=prometheus

# Prometheus Operator: reconciles Prometheus/Alertmanager objects into config Secrets (the e2e
# runs the real prometheus/alertmanager from those, see localcluster/monitoringstack.py)
promop_ldflags="-X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION#v}"
promop_ldflags+=" -X github.com/prometheus/common/version.Revision=$PROMETHEUS_OPERATOR_VERSION"
promop_ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
promop_ldflags+=" -X github.com/prometheus/common/version.BuildUser=kuberank"
promop_ldflags+=" -X github.com/prometheus/common/version.BuildDate=@BUILD_DATE@"
build_set prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" prometheus-operator \
  github.com/prometheus-operator/prometheus-operator "$promop_ldflags" \
  "version ${PROMETHEUS_OPERATOR_VERSION#v}" "~5 min on 2 cores, 9 when they are busy" \
  github.com/prometheus-operator/prometheus-operator/cmd/operator=operator
# its CRDs as its module ships them (example/prometheus-operator-crd), beside the binary
promop_crds="$bin_root/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/crds"
if [ ! -d "$promop_crds" ]; then
  require_go
  promop_module=$(cd "$here/go/prometheus-operator" &&
    go list -m -f '{{.Dir}}' github.com/prometheus-operator/prometheus-operator)
  rm -rf "$bin_root/.tmp-prometheus-operator-crds"
  mkdir -p "$bin_root/.tmp-prometheus-operator-crds"
  cp "$promop_module"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml \
    "$bin_root/.tmp-prometheus-operator-crds/"
  chmod 644 "$bin_root/.tmp-prometheus-operator-crds/"*.yaml
  mv "$bin_root/.tmp-prometheus-operator-crds" "$promop_crds"
  echo "==> prometheus-operator CRDs: $promop_crds"
fi

# prometheus-adapter: the custom metrics API from Prometheus queries (it has no --version flag:
# version_of reads the module version from the binary's build info)
build_set prometheus-adapter "$PROMETHEUS_ADAPTER_VERSION" prometheus-adapter \
  sigs.k8s.io/prometheus-adapter "" "sigs.k8s.io/prometheus-adapter $PROMETHEUS_ADAPTER_VERSION" \
  "~5 min on 2 cores, 16 when they are busy" sigs.k8s.io/prometheus-adapter/cmd/adapter=adapter
echo "==> tools ready in $bin_root"
