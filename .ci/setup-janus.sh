#!/usr/bin/env bash
# Janus (Debian package janus: the VideoRoom plugin and the HTTP transport)
# for the sidecar tests (sidecar/janus_test.go starts its own instances on
# loopback with generated configs; the packaged service is not used).
set -euo pipefail
if ! command -v janus >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends janus
fi
# The package may start its own service; the tests never use it.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now janus >/dev/null 2>&1 || true; fi
echo "janus: $(janus --version 2>/dev/null | head -1 || echo installed)"
