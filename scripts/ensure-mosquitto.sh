#!/usr/bin/env bash
# Make sure the mosquitto broker binary is installed (the demo and tests start a private
# one; they never use a system-wide broker). Installs the distro package when allowed.
set -euo pipefail
if { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } \
        && command -v mosquitto_sub >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "aislecast needs the mosquitto broker: install it with your package manager" >&2
    echo "(Debian/Ubuntu/Raspberry Pi OS: sudo apt-get install -y mosquitto)" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "aislecast needs the mosquitto broker, which is not installed." >&2
    echo "Install it with:  sudo apt-get install -y mosquitto mosquitto-clients   then run make again." >&2
    exit 1
fi
echo "installing mosquitto (Debian package) ..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
# the demo runs its own broker; do not leave the distro's service listening on 1883 for it
