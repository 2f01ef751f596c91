# Sourced by the benchmark scripts: `bench_summary AREA FIGURE VALUE TARGET STATUS`
# appends one headline figure for bench/report.sh (to $BENCH_SUMMARY, when set)
# as a tab-separated line; STATUS is "met", "not met" or "" (no target).
bench_summary() {
    [[ -n "${BENCH_SUMMARY:-}" ]] || return 0
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$(basename "$0")" >> "$BENCH_SUMMARY"
}
# `ratio_status VALUE OP LIMIT`: "met" or "not met" (OP is >= or <=).
ratio_status() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= l : v <= l; print ok ? "met" : "not met" }'; }
