#!/usr/bin/env bash
# System packages from Debian, installed when missing (as root, as on CI); otherwise says what to install.
# - chromium: the drill report's test renders the HTML page in headless Chromium. Without it that test
#   skips locally; under CI=true a skip fails the run, so CI (root) installs it here.
set -eu
missing=()
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  missing+=(chromium)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  if [[ " ${missing[*]} " == *" chromium "* ]]; then
    echo "system-deps: chromium is not installed; the drill report's browser test will skip" \
         "(Debian/Ubuntu: apt-get install chromium)" >&2
  fi
fi
