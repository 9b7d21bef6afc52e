#!/usr/bin/env bash
# Installs what ftpgate's tests and demo use on a Debian machine, if missing:
# Debian packages (apt-get update once, then the packages) and Go modules.
# Idempotent: when everything is there it changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 iptables vsftpd lftp curl python3 procps)
missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}"
	# Package scripts must not start daemons (vsftpd) in the root namespace:
	# the tests run their own vsftpd inside a network namespace.
	policy=/usr/sbin/policy-rc.d
	created=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		created=1
	fi
	trap '[ -z "$created" ] || rm -f "$policy"' EXIT
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null; then
	export PATH="$PATH:/usr/local/go/bin"
fi
go mod download
