#!/usr/bin/env bash
# A throw-away S3 endpoint on loopback for tests and development: a one-node
# Ceph cluster (1 monitor, 1 OSD keeping objects in RAM, no mgr) plus the
# RADOS Gateway, all bound to 127.0.0.1, everything under $RGW_DIR.
# Nothing is read from or written to /etc/ceph or /var/lib/ceph, and no root
# is needed to run it (only to install the packages).
#
# Usage: scripts/s3-service.sh check | start | stop [--purge] | status | gateway-stop | gateway-start
#   check          exit 0 if the Ceph binaries are installed, else print the apt-get line and exit 3
#   start          start a fresh cluster (wipes $RGW_DIR), create the S3 user (and $S3_BUCKET if set),
#                  write $RGW_DIR/env (sourceable) and print it
#   stop           stop the daemons recorded in $RGW_DIR/run/*.pid (only if they are ours)
#   status         exit 0 if the gateway answers
#   gateway-stop   kill only radosgw (the data stays): simulates the object store going away
#   gateway-start  start radosgw again on the same cluster
#
# Packages (Debian 12): apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl
#
# Environment (all optional):
#   RGW_DIR        state directory                        default /tmp/ferry-s3
#   S3_PORT        S3 endpoint port                       default 7480
#   MON_PORT       monitor port                           default 16789
#   OSD_PORT_MIN   first port the OSD may bind (it needs 4; a range of 100 is used) default MON_PORT+1
#   S3_ACCESS_KEY / S3_SECRET_KEY   the S3 user's keys    default ferrytestaccess / ferrytestsecret
#   S3_BUCKET      a bucket to create after start         default none
#   OSD_BACKEND    memstore (objects in RAM, fastest) | bluestore (a sparse file $RGW_DIR/osd/block)
#                                                         default memstore
#   OSD_BYTES      capacity of the OSD (RAM for memstore, file size for bluestore)
#                                                         default 4 GiB (memstore), 32 GiB (bluestore)
set -euo pipefail

RGW_DIR=${RGW_DIR:-/tmp/ferry-s3}
S3_PORT=${S3_PORT:-7480}
MON_PORT=${MON_PORT:-16789}
OSD_PORT_MIN=${OSD_PORT_MIN:-$((MON_PORT + 1))}
OSD_PORT_MAX=$((OSD_PORT_MIN + 99))
S3_ACCESS_KEY=${S3_ACCESS_KEY:-ferrytestaccess}
S3_SECRET_KEY=${S3_SECRET_KEY:-ferrytestsecret}
S3_BUCKET=${S3_BUCKET:-}
OSD_BACKEND=${OSD_BACKEND:-memstore}
case "$OSD_BACKEND" in
  memstore) OSD_BYTES=${OSD_BYTES:-4294967296} ;;
  bluestore) OSD_BYTES=${OSD_BYTES:-34359738368} ;;
  *) echo "OSD_BACKEND must be memstore or bluestore" >&2; exit 2 ;;
esac
CONF="$RGW_DIR/ceph.conf"
APT_LINE="apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl"

t0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '[s3-service +%d.%03ds] %s\n' $((ms/1000)) $((ms%1000)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

check() {
  local missing=()
  for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph uuidgen curl; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing ${missing[*]}; install with: $APT_LINE" >&2
    return 3
  fi
}

# Is $1 a live process started with this cluster's ceph.conf? (A pid file
# alone is not enough: the pid may have been reused by somebody else.)
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$CONF"; }

# Still running (a zombie waiting for its reaper counts as gone)?
running() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A missing pid file counts as "still starting" (radosgw's parent returns
# before the child writes it); a pid file naming a dead process is fatal.
alive() { local f="$RGW_DIR/run/$1.pid" p; [ -f "$f" ] || return 0; p=$(cat "$f"); [ -z "$p" ] || kill -0 "$p" 2>/dev/null; }

# stop_one NAME SIGNAL: SIGNAL first (TERM, or KILL for a crash), SIGKILL after 2 s.
# Everything is throw-away, so there is no point waiting long for a graceful exit
# (radosgw lingers for seconds after its "final shutdown").
stop_one() {
  local name=$1 signal=${2:-TERM} pidfile="$RGW_DIR/run/$1.pid" pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && ours "$pid"; then
    kill -"$signal" "$pid" 2>/dev/null || true
    # Wait for the process itself, not its cmdline: that reads empty while it is still exiting.
    for i in $(seq 1 20); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    fi
    running "$pid" && die "$name ($pid) did not exit"
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

start_gateway() {
  port_busy "$S3_PORT" && die "127.0.0.1:$S3_PORT is already in use"
  radosgw -c "$CONF" -n client.rgw.a 2>>"$RGW_DIR/log/client.rgw.a.stderr" \
    || die "radosgw failed to start; see $RGW_DIR/log/client.rgw.a.*"
  local i
  for i in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$S3_PORT/" 2>/dev/null && break
    if [ "$i" = 300 ] || ! alive client.rgw.a; then die "radosgw did not answer on 127.0.0.1:$S3_PORT; see $RGW_DIR/log/client.rgw.a.*"; fi
    sleep 0.1
  done
  log "radosgw answering on 127.0.0.1:$S3_PORT"
}

start() {
  check || exit 3
  for f in "$RGW_DIR"/run/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    if [ -n "$p" ] && ours "$p"; then die "a daemon of $RGW_DIR is still running (pid $p); run '$0 stop' first"; fi
  done
  # A taken port would make the readiness probe talk to somebody else's server.
  for p in "$S3_PORT" "$MON_PORT"; do port_busy "$p" && die "127.0.0.1:$p is already in use"; done

  rm -rf "$RGW_DIR"
  mkdir -p "$RGW_DIR"/{mon/ceph-a,osd/ceph-0,rgw/ceph-rgw.a,run,log,crash}
  local fsid osd_uuid
  fsid=$(uuidgen)
  osd_uuid=$(uuidgen)
  local osd_store
  if [ "$OSD_BACKEND" = memstore ]; then
    osd_store="osd objectstore = memstore
memstore device bytes = $OSD_BYTES"
  else
    # Benchmarks write more than RAM should hold: a sparse file, a modest cache.
    osd_store="osd objectstore = bluestore
bluestore block path = $RGW_DIR/osd/block
bluestore block create = true
bluestore block size = $OSD_BYTES
bluestore fsck on mkfs = false
bluestore cache size = 134217728
osd memory target = 939524096"
  fi
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
ms bind port min = $OSD_PORT_MIN
ms bind port max = $OSD_PORT_MAX
# No cephx: only local processes can reach 127.0.0.1 ports anyway.
auth cluster required = none
auth service required = none
auth client required = none
# radosgw's default "secure" mon client mode needs cephx; without it radosgw hangs.
ms mon client mode = crc
ms client mode = crc
client mount timeout = 30
run dir = $RGW_DIR/run
admin socket = $RGW_DIR/run/\$cluster-\$name.asok
pid file = $RGW_DIR/run/\$name.pid
log file = $RGW_DIR/log/\$name.log
crash dir = $RGW_DIR/crash
keyring = /dev/null
log to syslog = false
err to syslog = false
log to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
# The default 1 s paxos batching makes the first start take ~9 s.
paxos propose interval = 0.05
paxos min wait = 0.01

[mon]
mon data = $RGW_DIR/mon/\$cluster-\$id
mon cluster log file = $RGW_DIR/log/\$cluster.\$channel.log
mon data avail warn = 2
mon data avail crit = 1

[osd]
osd data = $RGW_DIR/osd/\$cluster-\$id
$osd_store
osd crush update on start = true
osd op num shards = 2
osd op num threads per shard = 1

[client.rgw.a]
rgw data = $RGW_DIR/rgw/\$cluster-\$id
rgw frontends = beast endpoint=127.0.0.1:$S3_PORT
rgw thread pool size = 64
# Deleted objects are freed by RGW's garbage collector; sooner than the default 2 h so
# benchmarks that push and delete a lot do not fill the OSD.
rgw gc obj min wait = 30
rgw gc processor period = 30
EOF
  local C=(-c "$CONF") i
  log "creating monitor"
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$RGW_DIR/monmap" >/dev/null
  ceph-mon "${C[@]}" -i a --mkfs --monmap "$RGW_DIR/monmap" 2>>"$RGW_DIR/log/mon.a.stderr" || die "ceph-mon --mkfs failed; see $RGW_DIR/log/"
  ceph-mon "${C[@]}" -i a 2>>"$RGW_DIR/log/mon.a.stderr" || die "ceph-mon failed to start; see $RGW_DIR/log/mon.a.*"
  for i in $(seq 1 100); do
    ceph "${C[@]}" --connect-timeout 2 mon stat >/dev/null 2>&1 && break
    if [ "$i" = 100 ] || ! alive mon.a; then die "monitor did not come up; see $RGW_DIR/log/mon.a.*"; fi
    sleep 0.2
  done
  local osd_id
  osd_id=$(ceph "${C[@]}" osd new "$osd_uuid" 2>>"$RGW_DIR/log/ceph-cli.stderr") || die "ceph osd new failed"
  [ "$osd_id" = 0 ] || die "unexpected osd id '$osd_id'"
  ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$RGW_DIR/log/osd.0.stderr" 2>&1 || die "ceph-osd --mkfs failed; see $RGW_DIR/log/osd.0.*"
  ceph-osd "${C[@]}" -i 0 2>>"$RGW_DIR/log/osd.0.stderr" || die "ceph-osd failed to start; see $RGW_DIR/log/osd.0.*"
  for i in $(seq 1 150); do
    ceph "${C[@]}" osd dump 2>/dev/null | grep -q '^osd.0 up' && break
    if [ "$i" = 150 ] || ! alive osd.0; then die "osd.0 did not come up; see $RGW_DIR/log/osd.0.*"; fi
    sleep 0.2
  done
  log "osd.0 up"
  start_gateway
  radosgw-admin "${C[@]}" user create --uid=ferry-test --display-name="Ferry tests" \
    --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >"$RGW_DIR/user.json" 2>>"$RGW_DIR/log/radosgw-admin.stderr" \
    || die "radosgw-admin user create failed; see $RGW_DIR/log/"
  if [ -n "$S3_BUCKET" ]; then
    # RGW refuses curl's signature unless the payload hash header is present (sha256 of nothing).
    curl -fsS -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" -u "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
      -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
      "http://127.0.0.1:$S3_PORT/$S3_BUCKET" -o /dev/null || die "creating bucket $S3_BUCKET failed"
    log "bucket $S3_BUCKET created"
  fi
  cat >"$RGW_DIR/env" <<EOF
export S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export S3_ACCESS_KEY=$S3_ACCESS_KEY
export S3_SECRET_KEY=$S3_SECRET_KEY
export S3_REGION=us-east-1
export S3_BUCKET=$S3_BUCKET
export RGW_DIR=$RGW_DIR
EOF
  log "ready"
  cat "$RGW_DIR/env"
}

# Every command but start talks to the cluster already in $RGW_DIR: take its port from there.
if [ "${1:-}" != start ] && [ -f "$CONF" ]; then
  S3_PORT=$(sed -n 's/^rgw frontends = beast endpoint=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$CONF")
fi

case "${1:-}" in
  check) check ;;
  start) start ;;
  stop)
    # The cluster is throw-away: SIGKILL, gateway first (TERM would only add ~2 s per daemon).
    stop_one client.rgw.a KILL
    stop_one osd.0 KILL
    stop_one mon.a KILL
    # A daemon whose pid file was lost (radosgw removes its file while exiting, which can race a
    # restart) is still ours if it runs with this cluster's ceph.conf: find it by that, and kill it.
    for d in /proc/[0-9]*; do
      p=${d#/proc/}
      ours "$p" && running "$p" && { kill -KILL "$p" 2>/dev/null || true; log "killed stray daemon $p"; }
    done
    [ "${2:-}" = "--purge" ] && rm -rf "$RGW_DIR"
    exit 0
    ;;
  status) curl -fsS -o /dev/null "http://127.0.0.1:$S3_PORT/" ;;
  # Like a crash: no graceful shutdown, connections reset.
  gateway-stop) stop_one client.rgw.a KILL ;;
  gateway-start) [ -f "$CONF" ] || die "no cluster in $RGW_DIR"; start_gateway ;;
  *) echo "usage: $0 check | start | stop [--purge] | status | gateway-stop | gateway-start" >&2; exit 2 ;;
esac
