#!/usr/bin/env bash
# Debian packages the suite uses: prometheus (+ promtool), prometheus-alertmanager (+ amtool), openssl,
# and buildah, podman, mmdebstrap for the images.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v openssl >/dev/null || need+=(openssl)  # the local cluster's PKI
# make images (hack/build-images.sh): buildah builds, podman imports/saves/runs, mmdebstrap makes
# the base from Debian's archive; uidmap and fuse-overlayfs are what buildah/podman expect beside them.
command -v buildah >/dev/null || need+=(buildah)
command -v podman >/dev/null || need+=(podman)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v newuidmap >/dev/null || need+=(uidmap)
command -v fuse-overlayfs >/dev/null || need+=(fuse-overlayfs)
if [ ${#need[@]} -eq 0 ]; then
  echo "==> system packages present (prometheus, alertmanager, openssl)"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "==> apt-get install ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "==> installed ${need[*]}"
