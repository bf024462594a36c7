#!/usr/bin/env bash
# The soak (issue 8): N random operations (ADD, CHECK, DEL, GC, STATUS,
# ping) by 16 concurrent workers over every plugin and several networks,
# in a throwaway node namespace, as a runtime drives them (libcni).
# Checked while running: no address is held by two live attachments.
# Checked after: nothing leaked (links, bridge ports, addresses, routes,
# nft and iptables rules, state files, reservations, store entries,
# mounts), and every error was an expected one (a full pool, 100; a host
# port taken, 101). Prints the figures; exits non-zero otherwise.
#   scripts/soak.sh                         2000 operations, 16 workers
#   scripts/soak.sh -ops 20000 -workers 16  a long run
#   scripts/soak.sh -seed 42 -maxlive 64    other knobs (see -h)
# Uses $NETDRIVERS_BIN when set (prebuilt plugins), else builds them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_pkgs ip:iproute2 nft:nftables iptables:iptables

case ${1:-} in -h|--help) sed -n '2,13p' "$0"; exit 0 ;; esac
work=$(mktemp -d /tmp/netdrivers-soak.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ -z "${NETDRIVERS_BIN:-}" ]; then
	NETDRIVERS_BIN=$work/bin
	./scripts/build.sh "$NETDRIVERS_BIN"
fi
export NETDRIVERS_BIN
go test -c -tags soak -o "$work/soak" ./test/soak
# -test.timeout keeps the run bounded whatever the load; the flags after
# it are the soak's own.
"$work/soak" -test.run '^TestSoak$' -test.timeout 3h "$@"
