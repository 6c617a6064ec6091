#!/usr/bin/env bash
# Time `strata mount` of already-unpacked images: the 3-layer demo image and a generated
# 200-layer image (one small file per layer). Median of N mount+umount cycles; each
# mount includes process start, store open, image read and the overlay mount itself.
# Usage (root): benches/mount-time.sh [RUNS]. Needs python3, bc. Writes only under a fresh temp dir.
set -euo pipefail
runs=${1:-10}
cd "$(dirname "$0")/.."
cargo build -q --release --bin strata
strata=$PWD/target/release/strata
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/strata-mount-bench.XXXXXX")
trap 'umount -l "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/layers200" <<'PY'
import hashlib, io, json, os, sys, tarfile
layout = sys.argv[1]; blobs = os.path.join(layout, "blobs", "sha256"); os.makedirs(blobs)
def put(b):
    d = hashlib.sha256(b).hexdigest(); open(os.path.join(blobs, d), "wb").write(b); return "sha256:" + d, len(b)
layers, diffs = [], []
for i in range(200):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = f"layer {i}\n".encode(); info = tarfile.TarInfo(f"layers/l{i:03}"); info.size = len(data); t.addfile(info, io.BytesIO(data))
    b = buf.getvalue(); d, s = put(b); diffs.append(d)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
cd, cs = put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diffs}}).encode())
md, ms = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
    "annotations": {"org.opencontainers.image.ref.name": "layers200"}}]}, open(os.path.join(layout, "index.json"), "w"))
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
now() { date +%s.%N; }
for image in demo/image "$work/layers200"; do
  "$strata" unpack --root "$work/root" "$image" >/dev/null 2>&1
  ts=()
  for _ in $(seq "$runs"); do
    t0=$(now); "$strata" mount --root "$work/root" "$image" "$work/mnt" >/dev/null 2>&1; t1=$(now)
    "$strata" umount --rm --root "$work/root" "$work/mnt" >/dev/null
    ts+=("$(echo "$t1 - $t0" | bc -l)")
  done
  m=$(printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-28s median mount %.1f ms over %d runs\n' "$(basename "$image") ($(python3 -c "import json,sys;print(len(json.load(open(sys.argv[1]+'/blobs/sha256/'+json.load(open(sys.argv[1]+'/index.json'))['manifests'][0]['digest'][7:]))['layers']))" "$image") layers)" "$(echo "$m * 1000" | bc -l)" "$runs"
done
