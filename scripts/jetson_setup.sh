#!/usr/bin/env bash
# Jetson setup (JetPack 6.x): packages, a venv that sees JetPack's TensorRT, edgead; optional power mode
# and service. Idempotent. Usage: sudo scripts/jetson_setup.sh [--maxn] [--service]
set -euo pipefail
cd "$(dirname "$0")/.."
MAXN=0; SERVICE=0
for a in "$@"; do
  case "$a" in
    --maxn) MAXN=1 ;;
    --service) SERVICE=1 ;;
    *) echo "usage: $0 [--maxn] [--service]" >&2; exit 2 ;;
  esac
done
if [ ! -f /etc/nv_tegra_release ]; then
  echo "jetson_setup: not a Jetson (no /etc/nv_tegra_release); on a workstation use: make setup" >&2
  exit 2
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
PKGS=(python3-venv python3-dev gcc pkg-config python3-libnvinfer
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  gir1.2-gst-rtsp-server-1.0 libgirepository1.0-dev libcairo2-dev nvidia-l4t-gstreamer v4l-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "jetson_setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The JetPack TensorRT bindings are in the system Python: the venv must see them. No torch on the device.
[ -x .venv/bin/python ] || python3 -m venv --system-site-packages .venv
.venv/bin/python -m pip install -q "cuda-python>=12,<13" "PyGObject>=3.42,<3.51"
.venv/bin/python -m pip install -q -e ".[runtime]"
if [ "$MAXN" = 1 ]; then
  $SUDO nvpmodel -m 0            # MAXN (mode 0 on Orin; check with nvpmodel -q)
  $SUDO jetson_clocks            # pin clocks for stable latency
fi
if [ "$SERVICE" = 1 ]; then
  id edgead >/dev/null 2>&1 || $SUDO useradd --system --groups video --home /var/lib/edgead edgead
  $SUDO mkdir -p /etc/edgead /var/lib/edgead /opt/edgead
  $SUDO chown edgead:video /var/lib/edgead
  if [ ! -f /etc/edgead/cam0.env ]; then
    $SUDO install -m 600 deploy/inspect.env /etc/edgead/cam0.env  # may hold credentials: root only
  fi
  [ -e /opt/edgead/.venv ] || $SUDO ln -s "$PWD/.venv" /opt/edgead/.venv
  $SUDO cp deploy/edgead-inspect@.service /etc/systemd/system/edgead-inspect@.service
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable edgead-inspect@cam0
  echo "jetson_setup: service installed; edit /etc/edgead/cam0.env, then: sudo systemctl start edgead-inspect@cam0"
  echo "              (one more camera: a cam1.env beside it and edgead-inspect@cam1)"
fi
.venv/bin/edgead doctor || true
