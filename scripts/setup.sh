#!/usr/bin/env bash
# Idempotent setup on a fresh Debian machine: OS packages, a venv, the pinned CPU stack, edgead.
# Re-running does nothing when everything is in place (a stamp keyed on the requirement files).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
APT_PKGS=(ca-certificates
  # headless Chromium renders the verify HTML report in the tests
  chromium fonts-dejavu-core
  # GStreamer for live inspection, and the headers to build PyGObject in the venv
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  gir1.2-gst-rtsp-server-1.0 libgirepository1.0-dev libcairo2-dev pkg-config gcc python3-dev
  # the MQTT broker that the notifier tests start on 127.0.0.1 (on a free port of their own)
  mosquitto openssl)
# A system Python needs python3-venv; a pyenv/conda Python already has venv.
"$PY" -c "import venv, ensurepip" 2>/dev/null || APT_PKGS+=(python3-venv python3-pip)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.edgead-setup-$(cat requirements-cpu.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing the pinned CPU stack into .venv (torch==2.13.0 CPU wheel first)"
  .venv/bin/python -m pip install -q -r requirements-cpu.txt -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.edgead-setup-*
  touch "$stamp"
fi
