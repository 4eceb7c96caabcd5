#!/usr/bin/env bash
# scripts/check_layers.sh: every #include "..." of the project's sources
# names a header of its own layer or of a layer below it (the table below,
# the same as the Makefile's link lines; docs/ARCHITECTURE.md explains it).
# Prints each violation and exits 1; silent and 0 when the tree is clean.
set -euo pipefail
cd "$(dirname "$0")/.."

# folder -> the folders whose headers it may include (besides its own)
allowed_for() {
  case "$1" in
    common)                 echo "" ;;
    protocol)               echo "common" ;;
    vocab_align)            echo "common" ;;
    sampler)                echo "vocab_align common" ;;
    worker)                 echo "protocol vocab_align common" ;;
    coordinator/engine)     echo "protocol sampler vocab_align common" ;;
    coordinator/eval)       echo "sampler vocab_align common" ;;
    coordinator/api)        echo "coordinator/engine protocol sampler vocab_align common" ;;
    coordinator/cli)        echo "coordinator/api coordinator/eval coordinator/engine protocol sampler vocab_align common" ;;
    *) echo "?" ;;
  esac
}

bad=0
for dir in common protocol vocab_align sampler worker coordinator/engine coordinator/eval coordinator/api coordinator/cli; do
  [ -d "$dir" ] || continue
  ok="$dir $(allowed_for "$dir")"
  for f in "$dir"/*.c "$dir"/*.cpp "$dir"/*.h; do
    [ -e "$f" ] || continue
    while IFS= read -r inc; do
      hdir=$(dirname "$inc")
      case " $ok " in *" $hdir "*) ;; *)
        echo "layers: $f includes \"$inc\": $dir may include only $ok" >&2
        bad=1 ;;
      esac
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
  done
done
exit $bad
