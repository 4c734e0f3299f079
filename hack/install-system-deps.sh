#!/usr/bin/env bash
# Debian packages the suite uses: prometheus (+ promtool), prometheus-alertmanager (+ amtool), openssl,
# buildah, podman, mmdebstrap for the images, and the real node's containerd, runc, CNI plugins,
# iproute2, iptables, conntrack, busybox-static, gcc.
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
# The local cluster's real node (localcluster/realnode.py): container runtime, CNI plugins,
# kube-proxy's iptables/conntrack, and busybox-static for the node's test image.
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v gcc >/dev/null || need+=(gcc libc6-dev) # the node's pause image, built statically
if [ ${#need[@]} -eq 0 ]; then
  echo "==> system packages present (prometheus, alertmanager, openssl, image builders, the real node's runtime)"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "==> apt-get install ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "==> installed ${need[*]}"
