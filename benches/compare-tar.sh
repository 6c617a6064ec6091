#!/usr/bin/env bash
# Side by side: `strata apply` vs GNU tar extracting the same layer, alternating runs,
# median of N. Usage: benches/compare-tar.sh [RUNS] [SMALL_MIB] [LARGE_MIB]
# Extracts into a fresh temporary directory under $BENCH_DIR (default $TMPDIR or /tmp;
# use BENCH_DIR=/dev/shm to take the disk out of the measurement) and writes nothing
# else. Needs: tar, gzip, zstd, bc.
set -euo pipefail
runs=${1:-3}; small=${2:-256}; large=${3:-512}
cd "$(dirname "$0")/.."
cargo build -q --release --bin strata --example gen_layer
strata=$PWD/target/release/strata
work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/strata-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
./target/release/examples/gen_layer small "$small" "$work/small" >/dev/null
./target/release/examples/gen_layer large "$large" "$work/large" >/dev/null

now() { date +%s.%N; }
time_one() { # time_one CMD... ; prints seconds; target dir is $work/out
  rm -rf "$work/out"; mkdir "$work/out"; sync
  local t0 t1; t0=$(now); "$@" >/dev/null; sync; t1=$(now)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-8s %-6s %-22s %9s %9s %7s\n' layer codec tool seconds MB/s ratio
for layer in small large; do
  bytes=$(stat -c %s "$work/$layer.tar")
  for codec in gz zst; do
    blob="$work/$layer.tar.$codec"
    if [ $codec = gz ]; then tarflags=(-xzf); else tarflags=(--zstd -xf); fi
    declare -a s=() t=()
    for _ in $(seq "$runs"); do
      s+=("$(time_one "$strata" apply "$blob" "$work/out")")
      t+=("$(time_one tar "${tarflags[@]}" "$blob" -C "$work/out")")
    done
    ms=$(printf '%s\n' "${s[@]}" | median); mt=$(printf '%s\n' "${t[@]}" | median)
    printf '%-8s %-6s %-22s %9.3f %9.0f %7s\n' $layer $codec "strata apply" "$ms" "$(echo "$bytes/1000000/$ms" | bc -l)" "1.00"
    printf '%-8s %-6s %-22s %9.3f %9.0f %7.2f\n' $layer $codec "tar ${tarflags[*]}" "$mt" "$(echo "$bytes/1000000/$mt" | bc -l)" "$(echo "$mt/$ms" | bc -l)"
  done
done
echo "filesystem: $(df --output=fstype "$work" | tail -1) ($work)"
echo "MB/s = uncompressed tar bytes / wall seconds (incl. sync); ratio = tar time / strata time (>1: strata faster); median of $runs alternating runs"
