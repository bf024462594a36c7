#!/usr/bin/env bash
# Installs the plugins into a CNI bin dir.
#   scripts/install.sh [DIR]                  binaries into DIR (default /opt/cni/bin)
#   scripts/install.sh --conf CONFDIR [DIR]   also copy conf-examples/ into CONFDIR
#   scripts/install.sh --force ...            overwrite existing configs and a foreign loopback
# Builds the checkout first (scripts/build.sh) when Go is there. Configs
# are never overwritten unless --force is given.
set -euo pipefail
cd "$(dirname "$0")/.."
conf= force=
while [ $# -gt 0 ]; do
	case $1 in
	--conf) conf=$2; shift 2 ;;
	--force) force=1; shift ;;
	-h|--help) sed -n '2,7p' "$0"; exit 0 ;;
	*) break ;;
	esac
done
dest=${1:-/opt/cni/bin}
# From NETDRIVERS_BIN when set (the tests), else from a fresh build of this
# checkout: bin/ may hold binaries of an older one.
src=${NETDRIVERS_BIN:-bin}
if [ -z "${NETDRIVERS_BIN:-}" ]; then
	if PATH=$PATH:/usr/local/go/bin command -v go >/dev/null; then
		./scripts/build.sh
	elif [ -x bin/none ]; then
		echo "no Go here: installing bin/ as built before ($(bin/none --version 2>&1 | sed -n 1p))" >&2
	else
		echo "$0: no Go to build with (https://go.dev/dl/) and nothing built in bin/" >&2
		exit 1
	fi
fi
mkdir -p "$dest"
for b in "$src"/*; do
	name=$(basename "$b")
	# containerd needs a loopback; keep one that is not ours unless forced.
	if [ "$name" = loopback ] && [ -e "$dest/loopback" ] && [ -z "$force" ] &&
		[[ $("$dest/loopback" </dev/null 2>&1) != *netdrivers* ]]; then
		echo "keeping the existing $dest/loopback (use --force to replace it)"
		continue
	fi
	install -m 0755 "$b" "$dest/$name.tmp.$$" && mv -f "$dest/$name.tmp.$$" "$dest/$name"
	echo "installed $dest/$name"
done
if [ -n "$conf" ]; then
	mkdir -p "$conf"
	for f in conf-examples/*.conflist; do
		t="$conf/$(basename "$f")"
		if [ -e "$t" ] && [ -z "$force" ]; then
			echo "kept existing $t (use --force to overwrite)"
			continue
		fi
		cp "$f" "$t"
		echo "copied $t"
	done
fi
