#!/bin/sh
# strata-fuse against kernel overlayfs and fuse-overlayfs over the same layers, in one
# run: sequential read of a 1 GiB lower file, copy-up of that file (append 1 byte),
# stat of every file in a 10k-file tree, and untarring a 10k-file tree into the mount.
# Each run gets a fresh upper dir; drivers alternate order between runs.
#
# usage: sudo benches/fuse-figures.sh [DIR] [RUNS]     (DIR: where layers live; default /dev/shm)
# needs: root, /dev/fuse, a release build (cargo build --release), python3, bc;
#        fuse-overlayfs (apt install fuse-overlayfs) for its rows.
set -eu
DIR=${1:-/dev/shm}
RUNS=${2:-3}
BIN=$(cd "$(dirname "$0")/.." && pwd)/target/release/strata-fuse
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
W=$(mktemp -d "$DIR/strata-fuse-figures.XXXXXX")
trap 'for m in "$W"/mnt*; do umount -l "$m" 2>/dev/null || true; done; rm -rf "$W"' EXIT

# On a VM, the first touch of guest memory the host has not backed yet costs seconds per
# GiB and lands on whichever driver copies first; touch it once before measuring.
echo "warming memory" >&2
head -c 6G /dev/zero > "$W/warm" 2>/dev/null || true
rm -f "$W/warm"
echo "preparing layers in $W" >&2
mkdir -p "$W/big" "$W/tree" "$W/src"
head -c 1G /dev/urandom > "$W/big/big.bin"
python3 - "$W/tree" "$W/src" <<'EOF'
import os, random, sys
rng = random.Random(42)
for root in sys.argv[1:]:
    for i in range(10000):
        d = os.path.join(root, "tree", f"d{i % 100:02}", f"s{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(rng.randbytes(rng.choice([200, 900, 2000, 4000, 9000])))
EOF
tar -cf "$W/tree.tar" -C "$W/src" tree
rm -rf "$W/src"
LOWER="$W/big:$W/tree"

now() { date +%s.%N; }

mount_driver() { # driver mountpoint upper work
    case $1 in
    kernel) mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$3,workdir=$4,index=off" "$2" ;;
    strata-fuse) "$BIN" -o "lowerdir=$LOWER,upperdir=$3,workdir=$4" "$2" ;;
    strata-fuse-nopt) "$BIN" -o "lowerdir=$LOWER,upperdir=$3,workdir=$4,passthrough=off" "$2" ;;
    fuse-overlayfs) fuse-overlayfs -o "lowerdir=$LOWER,upperdir=$3,workdir=$4" "$2" 2>/dev/null ;;
    esac
}

DRIVERS="kernel strata-fuse strata-fuse-nopt"
command -v fuse-overlayfs >/dev/null && DRIVERS="$DRIVERS fuse-overlayfs" || echo "fuse-overlayfs: skipped (apt install fuse-overlayfs)" >&2
RESULTS="$W/results"
: > "$RESULTS"
for run in $(seq 1 "$RUNS"); do
    order=$DRIVERS
    [ $((run % 2)) -eq 0 ] && order=$(echo "$DRIVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for d in $order; do
        m="$W/mnt-$d"; u="$W/upper-$d"; wk="$W/work-$d"
        rm -rf "$u" "$wk"; mkdir -p "$m" "$u" "$wk"
        mount_driver "$d" "$m" "$u" "$wk"
        t0=$(now); cat "$m/big.bin" > /dev/null; t1=$(now)
        printf x >> "$m/big.bin"; t2=$(now)
        find "$m/tree" -type f -printf '%s\n' > /dev/null; t3=$(now)
        mkdir "$m/new"; tar -xf "$W/tree.tar" -C "$m/new"; t4=$(now)
        umount "$m"
        echo "$d read $(echo "$t1 - $t0" | bc)" >> "$RESULTS"
        echo "$d copyup $(echo "$t2 - $t1" | bc)" >> "$RESULTS"
        echo "$d stat $(echo "$t3 - $t2" | bc)" >> "$RESULTS"
        echo "$d untar $(echo "$t4 - $t3" | bc)" >> "$RESULTS"
        echo "run $run $d done" >&2
    done
done

printf '%-18s %-8s %9s %9s %9s %11s %13s\n' driver op median_s min_s max_s vs_kernel vs_fuse-ovl
for op in read copyup stat untar; do
    kmed=$(awk -v o=$op '$1=="kernel" && $2==o {print $3}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    fmed=$(awk -v o=$op '$1=="fuse-overlayfs" && $2==o {print $3}' "$RESULTS" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    for d in $DRIVERS; do
        awk -v o=$op -v d=$d '$1==d && $2==o {print $3}' "$RESULTS" | sort -n | awk -v d=$d -v o=$op -v k="$kmed" -v f="$fmed" '
            {a[NR]=$1} END {
                med=a[int((NR+1)/2)];
                vf = (f == "" ? "-" : sprintf("%.2fx", med / f));
                printf "%-18s %-8s %9.3f %9.3f %9.3f %10.2fx %13s\n", d, o, med, a[1], a[NR], med / k, vf }'
    done
done
echo "(vs_kernel, vs_fuse-ovl: time / that driver's median time; below 1.00x is faster)"
