#!/usr/bin/env bash
# Tools the deployment tests drive from outside Go (Debian bookworm):
#   prometheus      ships promtool, which checks deploy/prometheus/alerts.yml
#                   (TestAlertRulesPromtool); its server is never started
#   docker-compose  Debian's 1.29, brings deploy/compose up (TestComposeFailover)
#   docker.io       the engine the compose test runs on (.ci/setup-chaos.sh
#                   starts dockerd when it is not running)
#   chromium        the dashboard test (TestDashboardChromium; .ci/setup-media.sh
#                   installs it too)
# Idempotent; installs only what is missing.
set -euo pipefail
pkgs=(prometheus docker-compose docker.io chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-deploy: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup-deploy: missing ${missing[*]} and not root; the deploy tests will skip (or fail with CI=true)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting services (the prometheus server): we
# only want promtool. Remove the guard again only if we put it there.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  guard=1
fi
trap 'if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup-deploy: installed ${missing[*]}"
