#!/usr/bin/env bash
# Installs what ftpgate's tests and demo use on a Debian machine, if missing:
# Debian packages (apt-get update once, then the packages), the FTP servers
# of the interoperability matrix that conflict with vsftpd as packages
# (unpacked into a cache folder, see below), and Go modules.
# Idempotent: when everything is there it changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# wget and tnftp (a classic interactive ftp client) are clients of the
# interoperability matrix (e2e/interop_test.go). nftables and ipset: the
# tests read the netlink backend's tables and sets back with nft and ipset.
# podman and runc build and run the static image (make image, the sidecar
# test), with ca-certificates' bundle in it. prometheus: its promtool checks
# and unit-tests deploy/prometheus/'s alert rules (the daemon it also holds
# is not started: no_daemons). haproxy reads, as the reference parser, the
# PROXY protocol headers that upstream_proxy_protocol sends (TestUpstream-
# ProxyProtocol runs its own instance in a test namespace). firewalld runs
# as a test gateway's firewall (TestFirewalld), in its network namespace
# with a D-Bus bus of the test's own; with no systemd here, installing it
# starts nothing.
packages=(iproute2 iptables vsftpd lftp curl python3 procps wget tnftp nftables ipset podman runc ca-certificates prometheus haproxy firewalld)

# pure-ftpd and proftpd-core conflict with vsftpd (each provides
# ftp-server), so they are not installed (nor proftpd-mod-crypto, its
# mod_tls, which depends on proftpd-core): each is fetched with
# `apt-get download` and unpacked with `dpkg -x` (which runs no package
# script) into $servers_cache/<package>_<version>/, and
# $servers_cache/<package> points at the unpacked tree of the current
# version. Only their shared-library dependencies are installed as packages.
# The tests find them there (netlab.ServersCache, FTPGATE_TEST_SERVERS).
servers=(pure-ftpd proftpd-core proftpd-mod-crypto)
servers_cache="${FTPGATE_TEST_SERVERS:-/var/cache/ftpgate-test-servers}"

export DEBIAN_FRONTEND=noninteractive

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: need root to $*" >&2
		exit 1
	fi
}

# Package scripts must not start daemons (vsftpd) in the root namespace: the
# tests run their own servers inside network namespaces. policy-rc.d makes
# invoke-rc.d refuse to start anything while this script runs.
policy=/usr/sbin/policy-rc.d
policy_created=""
trap '[ -z "$policy_created" ] || rm -f "$policy"' EXIT
no_daemons() {
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		policy_created=1
	fi
}

updated=""
apt_update() {
	if [ -z "$updated" ]; then
		apt-get update -qq
		updated=1
	fi
}

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

install_packages() {
	local missing=() p
	for p in "$@"; do
		installed "$p" || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	need_root "install: ${missing[*]}"
	echo "install-deps: installing ${missing[*]}"
	no_daemons
	apt_update
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_packages "${packages[@]}"

# candidate prints the version apt would install of package $1 (empty if the
# package lists do not know it).
candidate() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2; exit }'
}

# libraries prints the shared-library packages among the dependencies of the
# .deb file $1 (the first of each set of alternatives, without versions):
# libfoo1, libfoo-bar2, zlib1g; not adduser, ucf, libpam-runtime and such.
libraries() {
	dpkg-deb -f "$1" Pre-Depends Depends |
		sed -e 's/^[A-Za-z-]*: //' | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' |
		grep -E '^(lib[a-z0-9.+-]*[0-9][a-z0-9.+-]*|zlib1g)$' | sort -u
}

# unpack fetches version $2 of package $1 and unpacks it into $3; it fails
# when the download does (stale package lists).
unpack() {
	local pkg="$1" version="$2" dir="$3" debs="$servers_cache/debs" deb libs
	need_root "unpack $pkg into $servers_cache"
	echo "install-deps: fetching $pkg $version into $dir"
	mkdir -p "$debs"
	rm -rf "$dir"
	# apt-get download writes into the current directory, as root here (apt
	# warns that its _apt user cannot write there: harmless).
	(cd "$debs" && apt-get download -qq "$pkg=$version" 2>&1 | { grep -v unsandboxed || true; }) || return 1
	deb="$(find "$debs" -maxdepth 1 -name "${pkg}_*${version##*:}_*.deb" | head -n 1)"
	[ -n "$deb" ] || return 1
	mkdir -p "$dir" || return 1
	dpkg -x "$deb" "$dir" || return 1
	libs="$(libraries "$deb")"
	if [ -z "$libs" ]; then
		echo "install-deps: found no library dependencies of $deb" >&2
		exit 1
	fi
	echo "$libs" >"$dir/.libraries"
	echo "$pkg $version" >"$dir/.unpacked"
	rm -f "$deb"
}

for pkg in "${servers[@]}"; do
	for try in 1 2; do
		version="$(candidate "$pkg")"
		dir="$servers_cache/${pkg}_${version//:/%3a}"
		if [ -n "$version" ] && { [ -e "$dir/.unpacked" ] || unpack "$pkg" "$version" "$dir"; }; then
			break
		fi
		if [ "$try" = 2 ] || [ -n "$updated" ]; then
			echo "install-deps: cannot fetch $pkg from Debian's package lists (version '$version')" >&2
			exit 1
		fi
		need_root "update the package lists for $pkg"
		apt_update
	done
	if [ "$(readlink "$servers_cache/$pkg" 2>/dev/null)" != "$(basename "$dir")" ]; then
		ln -sfn "$(basename "$dir")" "$servers_cache/$pkg.tmp"
		mv -Tf "$servers_cache/$pkg.tmp" "$servers_cache/$pkg"
	fi
	mapfile -t libs <"$dir/.libraries"
	install_packages "${libs[@]}"
done

# Every unpacked server binary must find its libraries.
for bin in "$servers_cache/pure-ftpd/usr/sbin/pure-ftpd" "$servers_cache/proftpd-core/usr/sbin/proftpd"; do
	missing_libs="$(ldd "$bin" | grep "not found" || true)"
	if [ -n "$missing_libs" ]; then
		echo "install-deps: $bin lacks libraries:" >&2
		echo "$missing_libs" >&2
		exit 1
	fi
done

if ! command -v go >/dev/null; then
	export PATH="$PATH:/usr/local/go/bin"
fi
go mod download
