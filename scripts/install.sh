#!/usr/bin/env bash
# Installs the plugins into a CNI bin dir.
#   scripts/install.sh [DIR]                  binaries into DIR (default /opt/cni/bin)
#   scripts/install.sh --conf CONFDIR [DIR]   also copy conf-examples/ into CONFDIR
#   scripts/install.sh --force ...            overwrite existing configs and a foreign loopback
# Configs are never overwritten unless --force is given.
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
[ -x bin/none ] || ./scripts/build.sh
mkdir -p "$dest"
for b in bin/*; do
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
