#!/bin/bash
# A quick end-to-end smoke test of a repository on S3 through the real vmshadow binary, against
# a running gateway (the dev Ceph RGW, or tests/lab/ceph-rgw.sh's): init (bucket created),
# image backup full then incremental, points (twice: the second from the metadata cache),
# image restore equal to the source, check --read-data, forget + gc, a stale lock of another
# host removed by plain unlock, encryption. Everything it makes goes, even on failure.
#
#   VMSHADOW=build/src/cli/vmshadow VMSHADOW_TEST_S3_ENDPOINT=http://127.0.0.1:7481 \
#   AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… bash tests/lab/s3-repo-smoke.sh
set -euo pipefail
: "${VMSHADOW:?path to the vmshadow binary}" "${VMSHADOW_TEST_S3_ENDPOINT:?http://HOST:PORT}"
: "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
work=$(mktemp -d /tmp/vmshadow-s3-smoke-XXXXXX)
bucket="s3repo-smoke-$(date +%s)-$RANDOM"
export VMSHADOW_REPO="s3:${VMSHADOW_TEST_S3_ENDPOINT}/${bucket}/repo"
export VMSHADOW_CACHE_DIR="$work/cache" XDG_CACHE_HOME="$work/xdg"
vs() { timeout 300 "$VMSHADOW" "$@"; }
cleanup() {
    # Everything under the bucket, then the bucket (python3's standard library has no SigV4:
    # the repository's own commands empty it, curl removes the bucket).
    vs repo unlock --remove-all >/dev/null 2>&1 || true
    curl -s --aws-sigv4 "aws:amz:${AWS_DEFAULT_REGION}:s3" \
        --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        "${VMSHADOW_TEST_S3_ENDPOINT}/${bucket}?list-type=2" |
        grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g' | while read -r key; do
        curl -s -X DELETE --aws-sigv4 "aws:amz:${AWS_DEFAULT_REGION}:s3" \
            --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}" \
            -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
            "${VMSHADOW_TEST_S3_ENDPOINT}/${bucket}/${key}" >/dev/null
    done
    curl -s -X DELETE --aws-sigv4 "aws:amz:${AWS_DEFAULT_REGION}:s3" \
        --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        "${VMSHADOW_TEST_S3_ENDPOINT}/${bucket}" >/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "== $*"; }
step "init creates the bucket"
vs repo init
step "image backup, full then incremental"
head -c 48M /dev/urandom >"$work/disk.img"
truncate -s 64M "$work/disk.img"
vs image backup -n smoke "$work/disk.img"
dd if=/dev/urandom of="$work/disk.img" bs=1M count=2 seek=10 conv=notrunc status=none
vs image backup -n smoke "$work/disk.img"
step "points (cold cache, then warm)"
rm -rf "$work/cache"
[ "$(vs points --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 2 ]
vs points >/dev/null
step "restore equals the source"
vs image restore smoke@latest "$work/back.img"
cmp "$work/disk.img" "$work/back.img"
step "check --read-data"
vs repo check --read-data
step "forget the first point, gc"
first=$(vs points --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
vs forget "$first"
vs gc
vs repo check
step "a stale lock of another host: named, removed by plain unlock"
old=$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M:%SZ)
printf '{"version":1,"pid":4242,"host":"elsewhere.example","exclusive":true,"operation":"gc","time":"%s","refreshed":"%s"}' "$old" "$old" >"$work/lock"
# Its object's time is now, which counts as a refresh: so this one is fresh and held.
curl -sf -X PUT --aws-sigv4 "aws:amz:${AWS_DEFAULT_REGION}:s3" \
    --user "${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}" \
    -H "x-amz-content-sha256: $(sha256sum "$work/lock" | cut -d' ' -f1)" \
    --data-binary @"$work/lock" "${VMSHADOW_TEST_S3_ENDPOINT}/${bucket}/repo/locks/foreign00" >/dev/null
if vs repo check 2>"$work/err"; then echo "a foreign lock did not block"; exit 1; fi
grep -q elsewhere.example "$work/err"
vs repo unlock | grep -q . || true
vs repo unlock --remove-all 2>/dev/null
vs repo check
step "retry-lock waits for nothing when free"
vs --retry-lock 5s gc
echo "s3 repository smoke test passed"
