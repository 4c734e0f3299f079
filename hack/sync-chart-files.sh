#!/usr/bin/env bash
# Copy the files the Helm chart packages from their single sources of truth into charts/kuberank:
#   crds/*.yaml               -> charts/kuberank/crds/        (Helm installs CRDs from there)
#   dashboards/kuberank.json  -> charts/kuberank/files/dashboards/
#   deploy/prometheus/*.yaml  -> charts/kuberank/files/rules/ (alert rules, plain Prometheus format)
# Helm cannot read files outside the chart directory, hence copies; tests/unit/chart keeps them
# identical. Run after editing any source: `make sync-chart`. `--check` only reports drift.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/charts/kuberank"
check=0
[ "${1:-}" = "--check" ] && check=1

drift=0
# sync SRC_DIR PATTERN DEST_DIR: DEST_DIR ends up holding exactly the files SRC_DIR/PATTERN names.
sync() {
  local src_dir=$1 pattern=$2 dest_dir=$3 f name
  mkdir -p "$dest_dir"
  shopt -s nullglob
  for f in "$src_dir"/$pattern; do
    name=$(basename "$f")
    if ! cmp -s "$f" "$dest_dir/$name"; then
      drift=1
      if [ $check = 1 ]; then echo "differs: ${dest_dir#"$root"/}/$name (source ${f#"$root"/})"; else cp "$f" "$dest_dir/$name"; echo "copied ${f#"$root"/} -> ${dest_dir#"$root"/}/"; fi
    fi
  done
  for f in "$dest_dir"/$pattern; do
    name=$(basename "$f")
    if [ ! -e "$src_dir/$name" ]; then
      drift=1
      if [ $check = 1 ]; then echo "stale: ${f#"$root"/} (no ${src_dir#"$root"/}/$name)"; else rm "$f"; echo "removed stale ${f#"$root"/}"; fi
    fi
  done
  shopt -u nullglob
}

sync "$root/crds" "*.yaml" "$chart/crds"
sync "$root/dashboards" "*.json" "$chart/files/dashboards"
sync "$root/deploy/prometheus" "*.yaml" "$chart/files/rules"

if [ $check = 1 ] && [ $drift = 1 ]; then
  echo "error: the chart's copies are out of date; run 'make sync-chart' (hack/sync-chart-files.sh) and commit" >&2
  exit 1
fi
[ $drift = 0 ] && echo "chart files are in sync"
exit 0
