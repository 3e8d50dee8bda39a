#!/usr/bin/env bash
# A real one-node SLURM (with accounting) and a local Ray head on this machine, for tests and trials.
#
#   scripts/cluster.sh install   apt: slurmctld slurmd slurmdbd munge mariadb-server; pip: imbadv[slurm,ray]
#   scripts/cluster.sh start     munged, mariadbd, slurmdbd, slurmctld, slurmd, then `ray start --head`
#   scripts/cluster.sh status    sinfo and `ray status`
#   scripts/cluster.sh stop      everything `start` started, by the pids it recorded
#   scripts/cluster.sh test [pytest args]   start, the cluster tests, stop (also when a test fails),
#                                all in a private network namespace: loopback only (make test-cluster)
#   scripts/cluster.sh shell     a shell in such a namespace with the cluster up; stopped on exit
#
# `start` advertises 127.0.0.1 (Ray's node address, SLURM's NodeAddr), but the daemons listen on
# every interface of the machine, and Ray's API has no authentication: on a shared machine use
# `test` or `shell`, whose network namespace has no interface but loopback (docs/cluster.md).
#
# Runs as root (daemons and /etc/slurm). PY (default .venv/bin/python) is the environment whose
# `ray` serves the head and whose pip gets the extras. State, logs and pids go to CLUSTER_DIR
# (default /tmp/imbadv-cluster). ACCOUNTING=none starts SLURM without slurmdbd and MariaDB, as
# clusters without accounting run (submitit then cannot see cancelled jobs). Details: docs/cluster.md.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CLUSTER_DIR=${CLUSTER_DIR:-/tmp/imbadv-cluster}
CLUSTER_NAME=imbadv
ACCOUNTING=${ACCOUNTING:-slurmdbd}
MARK="# written by imbadv scripts/cluster.sh"
export RAY_USAGE_STATS_ENABLED=0
# The daemons and clients only (slurm-wlm would pull every plugin and its -dev package).
APT_PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Poll `cmd` until it succeeds, at most $1 seconds.
wait_for() {
	local limit=$1 what=$2
	shift 2
	local end=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < end)) || die "$what did not come up in ${limit}s (logs: $CLUSTER_DIR)"
		sleep 0.5
	done
}

# Start a daemon that stays in the foreground (-D / no-fork flags), recording its pid.
spawn() {
	local name=$1
	shift
	setsid "$@" >"$CLUSTER_DIR/$name.log" 2>&1 </dev/null &
	echo $! >"$CLUSTER_DIR/$name.pid"
}

# Kill the process whose pid `start` recorded under $1, then wait until it is gone.
reap() {
	local pidfile="$CLUSTER_DIR/$1.pid" pid
	[[ -f $pidfile ]] || return 0
	pid=$(cat "$pidfile")
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

install() {
	local missing=()
	for p in "${APT_PACKAGES[@]}"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	if ((${#missing[@]})); then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	"$PY" -m pip install -q -e ".[slurm,ray]"
}

# Refuse to overwrite a SLURM config that someone else wrote.
write_conf() {
	local path=$1 mode=$2
	if [[ -f $path ]] && ! grep -qF "$MARK" "$path"; then
		die "$path exists and was not written by this script; move it away first"
	fi
	mkdir -p "$(dirname "$path")"
	{ echo "$MARK"; cat; } >"$path"
	chmod "$mode" "$path"
}

start_munge() {
	if [[ ! -s /etc/munge/munge.key ]]; then
		mungekey --create --keyfile=/etc/munge/munge.key
	fi
	chown munge:munge /etc/munge/munge.key
	chmod 600 /etc/munge/munge.key
	mkdir -p /run/munge /var/lib/munge /var/log/munge
	chown munge:munge /run/munge /var/lib/munge /var/log/munge
	if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
		return 0  # a munged is already running (a system one): use it, never stop it
	fi
	spawn munged runuser -u munge -- /usr/sbin/munged --foreground
	wait_for 20 munged bash -c "munge -n | unmunge"
}

start_mariadb() {
	if mariadb-admin ping >/dev/null 2>&1; then
		return 0  # an existing server on the default socket: slurmdbd uses it
	fi
	mkdir -p /run/mysqld
	chown mysql:mysql /run/mysqld
	if [[ ! -d /var/lib/mysql/mysql ]]; then
		mariadb-install-db --user=mysql >"$CLUSTER_DIR/mariadb-install.log" 2>&1
	fi
	# No TCP: slurmdbd reaches it through the default socket, as root (unix_socket auth).
	spawn mariadb /usr/sbin/mariadbd --user=mysql --skip-networking
	wait_for 60 mariadb mariadb-admin ping
}

start_slurmdbd() {
	write_conf /etc/slurm/slurmdbd.conf 600 <<-EOF
		AuthType=auth/munge
		DbdHost=localhost
		SlurmUser=root
		StorageType=accounting_storage/mysql
		StorageHost=localhost
		StorageUser=root
		StorageLoc=slurm_acct_db_$CLUSTER_NAME
		LogFile=$CLUSTER_DIR/slurmdbd.daemon.log
	EOF
	spawn slurmdbd /usr/sbin/slurmdbd -D
	wait_for 60 slurmdbd sacctmgr -n list cluster
	sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null 2>&1 || true
	# An account and the default QoS, so cluster.account / cluster.qos can be tried for real.
	sacctmgr -i add account "$CLUSTER_NAME" cluster="$CLUSTER_NAME" >/dev/null 2>&1 || true
	sacctmgr -i add user root account="$CLUSTER_NAME" cluster="$CLUSTER_NAME" >/dev/null 2>&1 || true
}

slurm_conf() {
	local node host
	host=$(hostname -s)
	# This machine's CPUs and memory as slurmd itself measures them.
	node=$(slurmd -C | head -1)
	cat <<-EOF
		ClusterName=$CLUSTER_NAME
		SlurmctldHost=$host(127.0.0.1)
		SlurmUser=root
		AuthType=auth/munge
		StateSaveLocation=$CLUSTER_DIR/slurmctld
		SlurmdSpoolDir=$CLUSTER_DIR/slurmd
		SlurmctldPidFile=$CLUSTER_DIR/slurmctld.daemon.pid
		SlurmdPidFile=$CLUSTER_DIR/slurmd.daemon.pid
		SlurmctldLogFile=$CLUSTER_DIR/slurmctld.daemon.log
		SlurmdLogFile=$CLUSTER_DIR/slurmd.daemon.log
		# No cgroups in containers: track processes through /proc, bind nothing.
		ProctrackType=proctrack/linuxproc
		TaskPlugin=task/none
		SelectType=select/cons_tres
		SelectTypeParameters=CR_Core_Memory
		$(accounting)
		JobCompType=jobcomp/none
		# A cancelled job gets SIGKILL 5 s after SIGTERM (submitit ignores SIGTERM).
		KillWait=5
		MinJobAge=30
		ReturnToService=2
		SchedulerParameters=sched_interval=2
		$node NodeAddr=127.0.0.1 State=UNKNOWN
		PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
	EOF
}

accounting() {
	if [[ $ACCOUNTING == none ]]; then
		printf '%s\n' AccountingStorageType=accounting_storage/none JobAcctGatherType=jobacct_gather/none
	else
		# Accounting through slurmdbd: sacct works, so submitit sees cancelled and failed jobs.
		printf '%s\n' AccountingStorageType=accounting_storage/slurmdbd AccountingStorageHost=localhost \
			JobAcctGatherType=jobacct_gather/linux
	fi
}

node_idle() { sinfo -h -o %t | grep -qE '^(idle|mix|alloc)'; }

start_slurm() {
	mkdir -p "$CLUSTER_DIR"/{slurmctld,slurmd}
	start_munge
	slurm_conf | write_conf /etc/slurm/slurm.conf 644  # sacctmgr reads it too
	if [[ $ACCOUNTING != none ]]; then
		start_mariadb
		start_slurmdbd
	fi
	spawn slurmctld /usr/sbin/slurmctld -D -c
	wait_for 60 slurmctld scontrol ping
	spawn slurmd /usr/sbin/slurmd -D
	wait_for 60 "the SLURM node" node_idle
	log "SLURM up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t')"
}

start_ray() {
	local ray
	ray="$(dirname "$PY")/ray"
	[[ -x $ray ]] || die "$ray not found: run 'scripts/cluster.sh install' (PY=$PY)"
	"$ray" start --head --node-ip-address=127.0.0.1 --disable-usage-stats --include-dashboard=false \
		>"$CLUSTER_DIR/ray.log" 2>&1 || die "ray start failed (log: $CLUSTER_DIR/ray.log)"
	log "Ray head up: attach with hydra.launcher.ray.init.address=auto"
}

stop_ray() {
	local ray
	ray="$(dirname "$PY")/ray"
	[[ -x $ray ]] && "$ray" stop >/dev/null 2>&1 || true
}

stop_slurm() {
	# Daemons this script started, in reverse order; a system munged or mariadb is left alone.
	for name in slurmd slurmctld slurmdbd mariadb munged; do
		reap "$name"
	done
}

status() {
	sinfo 2>&1 || true
	squeue 2>&1 || true
	"$(dirname "$PY")/ray" status 2>&1 | head -20 || true
}

# Re-run this script as `$1 ...` in a new network namespace whose only interface is loopback.
in_private_network() {
	if [[ ${IMBADV_PRIVATE_NET:-} == 1 ]]; then
		ip link set lo up
		# slurmdbd binds through getaddrinfo(AF_INET, AI_ADDRCONFIG), which finds nothing while
		# the only IPv4 address is a 127.x one: one more address on the namespace's own loopback
		# (198.18.0.0/15, set aside for tests) satisfies it; everything still talks over 127.0.0.1.
		ip addr add 198.18.0.1/32 dev lo
		return 0
	fi
	[[ ! -f $CLUSTER_DIR/slurmctld.pid ]] || die "a cluster from 'start' is running: '$0 stop' first"
	exec unshare --net -- env IMBADV_PRIVATE_NET=1 "$SELF" "$@"
}

# The cluster tests between start and stop; the daemons stop whatever the tests do.
run_tests() {
	trap 'stop_ray; stop_slurm' EXIT
	start_slurm
	start_ray
	"$PY" -m pytest -q -m cluster tests/test_cluster.py "$@"
}

shell() {
	trap 'stop_ray; stop_slurm' EXIT
	start_slurm
	start_ray
	log "a shell in a private network (loopback only); the cluster stops when it exits"
	bash -i || true
}

main() {
	local what=${1:-} engines=${2:-all}
	[[ $(id -u) == 0 ]] || die "run as root (it starts SLURM daemons and writes /etc/slurm)"
	mkdir -p "$CLUSTER_DIR"
	case "$what" in
	install) install ;;
	start)
		[[ $engines == ray ]] || start_slurm
		[[ $engines == slurm ]] || start_ray
		;;
	stop)
		[[ $engines == slurm ]] || stop_ray
		[[ $engines == ray ]] || stop_slurm
		;;
	status) status ;;
	test)
		in_private_network "$@"
		shift
		run_tests "$@"
		;;
	shell)
		in_private_network "$@"
		shell
		;;
	*) die "usage: $0 install|start|stop|status [slurm|ray|all] | test [pytest args] | shell" ;;
	esac
}

main "$@"
