# tests/integration/lib_tap.sh: the TAP helpers the integration scripts share
# (sourced; lib_serve.sh sources it too). A script counts with `check` and
# ends with `tap_done`, which prints the plan and sets the exit status.
n=${n:-0}
failed=${failed:-0}

# check "what" command...: one test line, ok when the command succeeds
check() {
  local what=$1; shift
  n=$((n + 1))
  if "$@"; then echo "ok $n - $what"; else echo "not ok $n - $what"; failed=$((failed + 1)); fi
}

# same "what" A B: exact equality; both texts shown as comments when they differ
same() {
  if [ "$2" = "$3" ]; then check "$1" true; else
    printf '#   got:  %q\n#   want: %q\n' "$2" "$3"; check "$1" false; fi
}

# tap_done: the plan, and a non-zero exit status when a check failed
tap_done() {
  echo "1..$n"
  [ "$failed" -eq 0 ]
}
