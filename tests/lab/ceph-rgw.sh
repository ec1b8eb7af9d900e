#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A real single-node Ceph cluster (Debian 12's Ceph 16.2) with its RADOS Gateway on loopback,
# for the S3 tests (ctest fixture s3.up / s3.down) and the bench (bench/repo/run.sh s3).
# No systemd, nothing under /etc/ceph or /var/lib/ceph: every path is in one private
# ceph.conf inside $CEPHLAB (recipe: ../shared/LAB.md, "A Ceph cluster with its S3 gateway").
#
#   ceph-rgw.sh up       start mon, OSD and radosgw on free loopback ports, create the S3 user
#                        and check a PUT; idempotent (already up: prints the env file's path).
#                        Prints the env file's path as the last line.
#   ceph-rgw.sh down     stop the three daemons (only ours: pid files whose process names our
#                        ceph.conf) and remove $CEPHLAB; safe when nothing is up
#   ceph-rgw.sh status   "up ENDPOINT" (exit 0) or "down" (exit 3)
#   ceph-rgw.sh env      prints the env file's path (whether up or not)
#
# The env file ($CEPHLAB/s3.env, KEY=VALUE lines, `set -a; . FILE` loads it):
#   VMSHADOW_TEST_S3_ENDPOINT=http://127.0.0.1:PORT   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#   AWS_DEFAULT_REGION, VMSHADOW_TEST_CEPH_CONF (for radosgw-admin: tests remove their buckets
#   with it, not with the client under test); with TLS=1 also VMSHADOW_TEST_S3_HTTPS_ENDPOINT=https://127.0.0.1:PORT
#   and VMSHADOW_TEST_S3_CACERT=$CEPHLAB/tls/ca.pem (a test CA made here, for --cacert).
#
# Environment:
#   CEPHLAB   the cluster's directory, default /run/vmshadow-ceph; absolute, two levels deep
#             (several clusters: several directories). Never the developers' dev cluster's.
#   STORE     memstore (default: data in RAM, plan about twice the stored bytes) or bluestore
#             (a sparse file in $CEPHLAB, for the bench's gigabytes)
#   STORE_GB  the OSD's size, default 8 (memstore: a cap, not an allocation)
#   TLS       1 = also an https endpoint with a test CA (beast's ssl_endpoint); default 1
set -euo pipefail

D=${CEPHLAB:-/run/vmshadow-ceph}
D=${D%/}
[[ $D =~ ^/[^/]+/[^/]+ ]] || { echo "ceph-rgw: CEPHLAB must be an absolute path two levels deep" >&2; exit 2; }
STORE=${STORE:-memstore}
STORE_GB=${STORE_GB:-8}
TLS=${TLS:-1}
IP=127.0.0.1
AK=VMSHADOWLABACCESS001
SK=vmshadowlabsecretkey00000000000000000001
ENV_FILE=$D/s3.env
C=(-c "$D/ceph.conf")

log() { printf 'ceph-rgw: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# A port nobody listens on now. Another process may take it before our daemon binds it: `up`
# then fails on that daemon and the caller runs `down` + `up` again (ctest: the fixture).
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Only our own daemons are ever signalled: pids wrap within minutes here, and the dev
# cluster runs the same programs.
our_pid() {
  local p
  p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$D/ceph.conf" && echo "$p"
}
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s:0:1}" != Z ]; }

wait_file() {
  local _
  for _ in $(seq 300); do [ -s "$1" ] && return 0; sleep 0.1; done
  die "timeout waiting for $1 (logs: $D/log)"
}

endpoint() { sed -n 's/^VMSHADOW_TEST_S3_ENDPOINT=//p' "$ENV_FILE" 2>/dev/null; }

rgw_answers() {
  local e
  e=$(endpoint) && [ -n "$e" ] && our_pid "$D/run/client.rgw.pid" >/dev/null &&
    [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$e/")" = 200 ]
}

s3() {  # curl with SigV4 as the gateway needs it (LAB.md): x-amz-content-sha256 always sent
  curl -sS -m 30 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

write_conf() {
  local fsid=$1 mon_port=$2 rgw_port=$3 tls_port=$4 frontends
  # tcp_nodelay: without it a small answer waits for the client's delayed ACK (~40 ms a
  # request: Nagle between beast's header and body writes), which made each metadata request
  # of a restore cost 44 ms here; production gateways set it too.
  frontends="beast endpoint=$IP:$rgw_port tcp_nodelay=1"
  [ "$TLS" = 1 ] && frontends+=" ssl_endpoint=$IP:$tls_port ssl_certificate=$D/tls/server.pem ssl_private_key=$D/tls/server.key"
  cat >"$D/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = v2:$IP:$mon_port
public_addr = $IP
cluster_addr = $IP
ms_bind_ipv6 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# radosgw, a client, defaults to secure-only mon mode, impossible with auth none: it would
# hang 300 s on "failed to fetch mon config"
ms_mon_client_mode = crc
run_dir = $D/run
admin_socket = $D/run/\$name.asok
pid_file = $D/run/\$name.pid
log_file = $D/log/\$name.log
mon_cluster_log_file = $D/log/cluster.log
crash_dir = $D/crash
keyring = $D/keyring
mon_data = $D/mon/\$id
osd_data = $D/osd/\$id
client_mount_timeout = 30
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 1
# every pool create is an osdmap commit: the default 1 s makes radosgw's first start ~14 s
paxos_propose_interval = 0.05
osd_objectstore = $STORE
memstore_device_bytes = $((STORE_GB << 30))
bluestore_block_size = $((STORE_GB << 30))
osd_memory_target = 1073741824
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
[client.rgw]
rgw_frontends = $frontends
rgw_data = $D/rgw
# deleted data is freed only by RGW's GC (default: after 2 h); memstore keeps it in RAM
rgw_gc_obj_min_wait = 60
rgw_gc_processor_period = 60
EOF
}

# A test CA and a server certificate for 127.0.0.1 and localhost (SAN), valid 2 days.
make_tls() {
  mkdir -p "$D/tls"
  local t=$D/tls
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=vmshadow test CA" \
    -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$t/ext.cnf"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 2 -extfile "$t/ext.cnf" -out "$t/server.pem" 2>/dev/null
  chmod 600 "$t"/*.key
}

up() {
  if rgw_answers; then
    echo "$ENV_FILE"
    return 0
  fi
  # A free port can be taken between our choice and the daemon's bind: try again on new ports.
  local attempt
  for attempt in 1 2 3; do
    (up_once) && return 0
    log "start $attempt of 3 failed"
  done
  return 1
}

up_once() {
  [ -e "$D" ] && { log "$D exists but the gateway does not answer: taking it down first"; down >/dev/null; }
  local t0=$SECONDS mon_port rgw_port tls_port=0 fsid uuid id ok=0 e
  # A failed start leaves nothing running: the logs' tails go to stderr, then down.
  trap 'up_failed' EXIT
  mkdir -p "$D"/{mon/a,osd/0,run,log,rgw,crash}
  echo "made by tests/lab/ceph-rgw.sh" >"$D/.ceph-rgw"
  mon_port=$(free_port)
  rgw_port=$(free_port)
  [ "$TLS" = 1 ] && { tls_port=$(free_port); make_tls; }
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid" "$mon_port" "$rgw_port" "$tls_port"
  monmaptool --create --fsid "$fsid" --addv a "[v2:$IP:$mon_port]" "$D/monmap" >/dev/null
  ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap"
  ceph-mon "${C[@]}" -i a
  wait_file "$D/run/mon.a.pid"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(timeout 60 ceph "${C[@]}" osd new "$uuid")
  ceph-osd "${C[@]}" -i "$id" --mkfs --osd-uuid "$uuid" >>"$D/log/osd-mkfs.out" 2>&1
  ceph-osd "${C[@]}" -i "$id" >>"$D/log/osd.out" 2>&1
  wait_file "$D/run/osd.$id.pid"
  radosgw "${C[@]}" -n client.rgw
  wait_file "$D/run/client.rgw.pid"
  e=http://$IP:$rgw_port
  for _ in $(seq 600); do  # the first start creates the gateway's pools (~1-2 s)
    [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$e/")" = 200 ] && { ok=1; break; }
    sleep 0.1
  done
  [ $ok = 1 ] || die "radosgw does not answer on $e after 60 s (logs: $D/log)"
  timeout 60 radosgw-admin "${C[@]}" user create --uid=vmshadow-lab --display-name=vmshadow-lab \
    --access-key="$AK" --secret-key="$SK" >/dev/null
  # Ready means a PUT succeeds (without a mgr, `ceph -s` shows no PGs).
  s3 -f -X PUT "$e/ceph-rgw-probe" -o /dev/null
  printf 'probe\n' >"$D/probe"
  s3 -f -T "$D/probe" "$e/ceph-rgw-probe/hello" -o /dev/null
  s3 -f -X DELETE "$e/ceph-rgw-probe/hello" -o /dev/null
  s3 -f -X DELETE "$e/ceph-rgw-probe" -o /dev/null
  {
    echo "VMSHADOW_TEST_S3_ENDPOINT=$e"
    echo "AWS_ACCESS_KEY_ID=$AK"
    echo "AWS_SECRET_ACCESS_KEY=$SK"
    echo "AWS_DEFAULT_REGION=us-east-1"
    echo "VMSHADOW_TEST_CEPH_CONF=$D/ceph.conf"
    if [ "$TLS" = 1 ]; then
      echo "VMSHADOW_TEST_S3_HTTPS_ENDPOINT=https://$IP:$tls_port"
      echo "VMSHADOW_TEST_S3_CACERT=$D/tls/ca.pem"
    fi
  } >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  if [ "$TLS" = 1 ]; then
    [ "$(curl -s -m 10 --cacert "$D/tls/ca.pem" -o /dev/null -w '%{http_code}' "https://$IP:$tls_port/")" = 200 ] ||
      die "radosgw's https endpoint https://$IP:$tls_port does not answer (logs: $D/log)"
  fi
  trap - EXIT
  log "up in $((SECONDS - t0)) s: $e ($STORE, ${STORE_GB} GiB)"
  echo "$ENV_FILE"
}

up_failed() {
  local f
  for f in "$D"/log/*; do
    [ -s "$f" ] && { log "--- tail of $f"; tail -n 15 "$f" >&2; }
  done
  down >/dev/null 2>&1 || true
}

down() {
  [ -e "$D" ] || { echo "ceph lab down"; return 0; }
  # rm -rf below: refuse a directory this script did not make.
  [ -e "$D/.ceph-rgw" ] || die "$D was not made by ceph-rgw.sh: not removing it"
  local group f p pids
  for group in 'client.rgw osd.0' 'mon.a'; do  # the mon last, else the OSD waits 5 s for it
    pids=()
    for f in $group; do
      p=$(our_pid "$D/run/$f.pid") && pids+=("$p")
    done
    [ ${#pids[@]} -gt 0 ] || continue
    kill "${pids[@]}" 2>/dev/null || true
    for p in "${pids[@]}"; do
      for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done  # radosgw may need > 10 s
      alive "$p" && kill -9 "$p" 2>/dev/null || true
    done
  done
  rm -rf "$D"
  echo "ceph lab down"
}

status() {
  if rgw_answers; then
    echo "up $(endpoint)"
  else
    echo down
    return 3
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "$ENV_FILE" ;;
  *)
    echo "usage: $0 up|down|status|env   (CEPHLAB=DIR, default /run/vmshadow-ceph; STORE, STORE_GB, TLS)" >&2
    exit 2
    ;;
esac
