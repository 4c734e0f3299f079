#!/usr/bin/env bash
# Debian packages the suite uses: prometheus (+ promtool), prometheus-alertmanager (+ amtool), openssl.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v openssl >/dev/null || need+=(openssl)  # the local cluster's PKI
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
