#!/usr/bin/env bash
# Tools the chaos suite (make chaos-short / make chaos) needs: iproute2
# (ip netns, veth, bridge, tc), iptables (partitions, loss and duplication
# inside the namespaces), util-linux (nsenter into containers, unshare
# --time for the clock fault), procps, and the Docker CLI/engine for the
# FROM-scratch container cluster. Never pulls an image: the suite builds its
# own from the static binary.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v pkill >/dev/null 2>&1 || need+=(procps)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if ! command -v docker >/dev/null 2>&1; then
  need+=(docker.io)
fi
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Docker's engine must be running for the container scenarios; start it if
# it is installed but not up (no image is ever pulled).
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  if command -v dockerd >/dev/null 2>&1; then
    (dockerd >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
docker info >/dev/null 2>&1 && echo "docker: $(docker version --format '{{.Server.Version}}')" || echo "docker: not usable"
