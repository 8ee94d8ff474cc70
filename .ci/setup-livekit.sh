#!/usr/bin/env bash
# livekit-server for the LiveKit sidecar test (sidecar/livekit_test.go):
# built once from the Go module (about 5 minutes on 2 cores) and cached
# outside the clone; see build-livekit.sh.
set -euo pipefail
bash "$(dirname "$0")/build-livekit.sh"
