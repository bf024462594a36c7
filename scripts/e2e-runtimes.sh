#!/usr/bin/env bash
# End-to-end under real runtimes: containerd's CRI, driven over its socket
# the way the kubelet drives it (a small CRI client, test/runtimes/cri),
# and Podman 4 with network_backend="cni". Fails on any miss.
#
# Installs podman, containerd, runc and busybox-static with apt if missing.
# Every runtime gets a private config, root, state, sockets and CNI dirs
# under one work dir and runs inside a throwaway network namespace (the
# node the plugins see), so /etc/cni/net.d, the host's network and firewall
# are never touched. On exit everything it made is stopped by PID and
# removed: containers, daemons, namespaces, mounts, the work dir.
#
# A driver whose plugins/<name> does not exist yet is skipped, loudly;
# one that exists must work. ND_RT_DRIVERS=a,b limits the run (development);
# ND_RT_KEEP_LOGS=DIR keeps the logs, plugin call records and configs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
start=$SECONDS

# Debian 12 packages; runc, since crun 1.8 fails on this VM's hybrid cgroups.
ensure_pkgs ip:iproute2 nft:nftables iptables:iptables busybox:busybox-static \
	podman:podman containerd:containerd runc:runc nsenter:util-linux
log "runtimes: $(podman --version), $(containerd --version | awk '{print $1, $3}'), runc $(runc --version | awk 'NR==1{print $3}')"

drivers=(none host-local-bridge macvlan hostns joinns)
skipped=()
for d in "${drivers[@]}"; do
	if [ ! -d "plugins/$d" ] || { [ -n "${ND_RT_DRIVERS:-}" ] && [[ ",$ND_RT_DRIVERS," != *",$d,"* ]]; }; then
		skipped+=("$d")
	fi
done

work=$(mktemp -d /tmp/nd-rt.XXXXXX)
etc_before=$(ls -la /etc/cni/net.d 2>/dev/null || true)
# containerd's shims always put their sockets in /run/containerd/s.
had_run_containerd=$([ -e /run/containerd ] && echo 1 || true)
test_pid=

# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL; only a process
# of this run (its command line names the work dir), never a reused PID.
stop_pid() {
	local pid=$1 i
	grep -qsF "$work" "/proc/$pid/cmdline" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "e2e-runtimes: PID $pid ignored SIGTERM; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
}

# leftover reports what the tests' own cleanups should have removed.
leftovers=0
leftover() {
	echo "e2e-runtimes: removing a leftover: $*" >&2
	leftovers=$((leftovers + 1))
}

# cleanup is a backstop: the tests remove what they make in their own
# cleanups, but a test killed by its timeout runs none of them. After a
# passing run it must find nothing.
cleanup() {
	local rc=$? dir ns pid m root id
	set +e
	[ -n "$test_pid" ] && kill -TERM "$test_pid" 2>/dev/null && wait "$test_pid"
	# Podman containers, removed by Podman itself from inside the node
	# namespace they were started in (so their CNI DEL runs there).
	if [ -f "$work/podman.list" ]; then
		while read -r dir ns; do
			[ -e "$ns" ] || continue
			for id in $(CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf \
				nsenter --net="$ns" podman rm -af -t 0 2>/dev/null); do
				leftover "podman container $id"
			done
		done <"$work/podman.list"
	fi
	# containerd's containers, then containerd (by the PIDs the tests
	# recorded), then any shim or conmon still serving the work dir.
	for root in "$work"/containerd/runc/*/; do
		[ -d "$root" ] || continue
		for id in $(runc --root "$root" list -q 2>/dev/null); do
			leftover "containerd container $id"
			runc --root "$root" delete --force "$id" >/dev/null 2>&1
		done
	done
	if [ -f "$work/pids" ]; then
		while read -r pid; do
			grep -qsF "$work" "/proc/$pid/cmdline" || continue
			leftover "daemon $pid"
			stop_pid "$pid"
		done <"$work/pids"
	fi
	for pid in $(grep -lsF "$work" /proc/[0-9]*/cmdline | cut -d/ -f3); do
		[ "$pid" != $$ ] && kill -0 "$pid" 2>/dev/null || continue
		leftover "process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
		stop_pid "$pid"
	done
	# Mounts (pod namespaces, rootfs binds) below the work dir, deepest
	# first, and the test namespaces pinned in /run/netns.
	for m in $(awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
		leftover "mount $m"
		umount -l "$m"
	done
	if [ -f "$work/netns.list" ]; then
		while read -r ns; do
			[ -e "$ns" ] || continue
			leftover "namespace $ns"
			umount -l "$ns" 2>/dev/null
			rm -f "$ns"
		done <"$work/netns.list"
	fi
	if [ -n "${ND_RT_KEEP_LOGS:-}" ]; then
		mkdir -p "$ND_RT_KEEP_LOGS"
		(cd "$work" && find . \( -name '*.log' -o -name '*.jsonl' -o -name '*.conflist' -o -name '*.toml' -o -name '*.conf' \) \
			-exec cp --parents {} "$ND_RT_KEEP_LOGS" \;)
		echo "e2e-runtimes: logs, call records and configs kept in $ND_RT_KEEP_LOGS" >&2
	fi
	# libcni's result cache (/var/lib/cni/results, which neither runtime
	# lets us move) keeps the entry of an attachment whose DEL failed.
	for id in $(cat "$work"/*/calls.jsonl 2>/dev/null | grep -o '"CNI_CONTAINERID":"[^"]*"' | cut -d'"' -f4 | sort -u); do
		for m in /var/lib/cni/results/*-"$id"-*; do
			[ -e "$m" ] || continue
			leftover "result cache entry $m"
			rm -f "$m"
		done
	done
	[ -n "$had_run_containerd" ] || rmdir /run/containerd/s /run/containerd 2>/dev/null
	rm -rf "$work"
	if [ "$(ls -la /etc/cni/net.d 2>/dev/null || true)" != "$etc_before" ]; then
		echo "e2e-runtimes: /etc/cni/net.d changed during the run" >&2
		rc=1
	fi
	if [ "$rc" -eq 0 ] && [ "$leftovers" -gt 0 ]; then
		echo "e2e-runtimes: FAILED: the tests passed but left $leftovers thing(s) behind" >&2
		rc=1
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export PATH=$PATH:/usr/sbin:/sbin
if [ -n "${NETDRIVERS_BIN:-}" ] && [ -x "$NETDRIVERS_BIN/none" ] && [ -x "$NETDRIVERS_BIN/loopback" ]; then
	bin=$NETDRIVERS_BIN
else
	bin=$work/bin
	./scripts/build.sh "$bin"
fi
log "runtimes: vetting and building the test binary, the pause image's binary and the call recorder"
go vet -tags runtimes ./test/runtimes/...
go build -tags runtimes -o "$work/pause" ./test/runtimes/pause
go build -tags runtimes -o "$work/recorder" ./test/runtimes/recorder
go test -c -tags runtimes -o "$work/runtimes.test" ./test/runtimes

log "runtimes: containerd CRI and Podman scenarios"
set +e
ND_RT_WORK=$work NETDRIVERS_BIN=$bin ND_RT_PAUSE=$work/pause ND_RT_RECORDER=$work/recorder \
	ND_RT_BUSYBOX=$(command -v busybox) \
	"$work/runtimes.test" -test.v -test.count=1 -test.timeout 4m "$@" >"$work/test.log" 2>&1 &
test_pid=$!
wait "$test_pid"
status=$?
test_pid=
set -e
grep -vE '^=== (RUN|PAUSE|CONT|NAME)' "$work/test.log" || true

if [ ${#skipped[@]} -gt 0 ]; then
	log "runtimes: SKIPPED drivers not in plugins/ yet: ${skipped[*]}"
fi
if grep -q 'KNOWN BUG' "$work/test.log"; then
	log "runtimes: SKIPPED scenarios a known bug breaks (they run again once it is fixed):"
	grep 'KNOWN BUG' "$work/test.log" >&2
fi
if [ "$status" -ne 0 ]; then
	log "runtimes: FAILED (exit $status) after $((SECONDS - start)) s"
	exit "$status"
fi
log "runtimes: passed in $((SECONDS - start)) s"
