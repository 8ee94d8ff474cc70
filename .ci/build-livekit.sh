#!/usr/bin/env bash
# livekit-server for the LiveKit sidecar test (sidecar/livekit_test.go;
# CI runs this through setup-livekit.sh, `make test-livekit` runs this and
# the test). The build takes about 5 minutes on 2 cores and fetches
# hundreds of modules from the module proxy. Built from the Go module at the
# version internal/livekittest pins
# (`go install ...@version` is refused by the module proxy; building inside
# the downloaded module works). The binary is cached outside the clone:
# ${SWITCHYARD_LIVEKIT_SERVER:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/livekit-server-$V}.
set -euo pipefail
V=v1.13.5
OUT="${SWITCHYARD_LIVEKIT_SERVER:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/livekit-server-$V}"
if [ -x "$OUT" ]; then
  echo "livekit-server: $OUT (cached)"
  exit 0
fi
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
dir=$(go mod download -json "github.com/livekit/livekit-server@$V" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
  echo "livekit-server: module download failed" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUT")"
# The module cache is read-only: build from a writable copy.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$dir"/. "$work"/
chmod -R u+w "$work"
(cd "$work" && GOFLAGS=-mod=mod go build -trimpath -o "$OUT.tmp" ./cmd/server)
mv "$OUT.tmp" "$OUT"
echo "livekit-server: built $OUT"
