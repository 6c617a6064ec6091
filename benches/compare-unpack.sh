#!/usr/bin/env bash
# Side by side: `strata unpack` (into the store with --jobs 1 and 2, and --to a rootfs)
# vs `umoci unpack` vs GNU `tar -xzf` of each layer, on a realistic image built from real
# files of this machine (3 gzip layers, ~200 MB; the top one has whiteouts and an opaque
# dir). Alternating runs, median of N, `sync` included.
# Usage: benches/compare-unpack.sh [RUNS]      Needs: tar, gzip, python3, bc, umoci (apt).
# Writes only under a fresh temporary directory ($BENCH_DIR or $TMPDIR or /tmp).
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
cargo build -q --release --bin strata
strata=$PWD/target/release/strata
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/strata-unpack-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- the image ---
mkdir -p "$work/layers" "$work/wh/usr/share/zoneinfo" "$work/wh/usr/share/perl"
tar -C / --numeric-owner -czf "$work/layers/1.tar.gz" usr/lib/python3.11 usr/share/perl usr/share/zoneinfo
tar -C / --numeric-owner -czf "$work/layers/2.tar.gz" usr/share/doc
touch "$work/wh/usr/share/zoneinfo/.wh.Europe" "$work/wh/usr/share/perl/.wh..wh..opq"
tar --numeric-owner -czf "$work/layers/3.tar.gz" -C / usr/share/i18n -C "$work/wh" usr
python3 - "$work" <<'PY'
import hashlib, json, os, sys, gzip
work = sys.argv[1]; layout = os.path.join(work, "image"); blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, d), "wb").write(data)
    return "sha256:" + d, len(data)
layers, diff_ids = [], []
for i in (1, 2, 3):
    blob = open(os.path.join(work, "layers", f"{i}.tar.gz"), "rb").read()
    digest, size = put(blob)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest())
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cs = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers}).encode()
md, ms = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
    "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, open(os.path.join(layout, "index.json"), "w"))
open(os.path.join(layout, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
bytes=$(for f in "$work"/layers/*.tar.gz; do gzip -dc "$f" | wc -c; done | awk '{s+=$1} END {print s}')

now() { date +%s.%N; }
run() { # run NAME CMD...: fresh outputs, then time CMD
  rm -rf "$work/out" "$work/root" "$work/bundle"; mkdir -p "$work/out"; sync
  local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; sync; t1=$(now)
  echo "$t1 - $t0" | bc -l
}
tar_layers() { for f in "$work"/layers/*.tar.gz; do tar -xzf "$f" -C "$work/out"; done; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
tools=("strata unpack --jobs 1" "strata unpack --jobs 2" "strata unpack --to" "umoci unpack" "tar -xzf (3 layers)")
for _ in $(seq "$runs"); do
  times["strata unpack --jobs 1"]+="$(run "$strata" unpack --root "$work/root" --jobs 1 "$work/image") "
  times["strata unpack --jobs 2"]+="$(run "$strata" unpack --root "$work/root" --jobs 2 "$work/image") "
  times["strata unpack --to"]+="$(run "$strata" unpack "$work/image" --to "$work/out/rootfs") "
  times["umoci unpack"]+="$(run umoci unpack --image "$work/image:bench" "$work/bundle") "
  times["tar -xzf (3 layers)"]+="$(run tar_layers) "
done
base=$(printf '%s\n' ${times["strata unpack --jobs 2"]} | median)
printf '%-26s %9s %9s %14s\n' tool seconds MB/s "vs --jobs 2"
for t in "${tools[@]}"; do
  m=$(printf '%s\n' ${times[$t]} | median)
  printf '%-26s %9.3f %9.0f %14.2f\n' "$t" "$m" "$(echo "$bytes/1000000/$m" | bc -l)" "$(echo "$m/$base" | bc -l)"
done
echo "image: 3 gzip layers from /usr (python3.11, perl, zoneinfo | doc | i18n + whiteouts), $((bytes/1000000)) MB uncompressed; median of $runs; filesystem $(df --output=fstype "$work" | tail -1)"
