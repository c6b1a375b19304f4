# Sourced by bench/run for `--real` (without --all-phases): the closed-model order phase on the
# real backends, as issue 12 compared this service with its Node.js peer, and what each order
# cost in round trips: MongoDB commands by path (request, worker, the FerretDB lock's own, and
# other: start-up and background jobs), SQS and SES requests, and the CPU of the service and of
# FerretDB (which was the saturated process on this server). Uses bench/run's helpers.

# The load generator's own setup inside the phase (registering and logging in its users,
# creating its products) is not order work: its commands are left out of the per-order counts.
setup_commands='collection="users",command="insert"|collection="sessions"|collection="products",command="insert"'
# series NAME FILTER: the sum of NAME's series whose labels contain FILTER (setup left out).
series() {
  metrics 2>/dev/null | awk -v name="$1" -v filter="$2" -v setup="$setup_commands" \
    'index($1, name "{") == 1 && index($1, filter) > 0 && $1 !~ setup { sum += $2 } END { printf "%d\n", sum }'
}
# ticks PID: user + system CPU of a process, in clock ticks.
ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# postgres_ticks: the CPU of PostgreSQL's server and of its live backends (FerretDB's storage
# with BENCH_FERRETDB_HANDLER=postgresql; 0 otherwise).
postgres_ticks() {
  [ -n "$postgres_pid" ] || { echo 0; return; }
  local sum=0 pid
  # The server and every process below it (it forks a backend per connection).
  for pid in $(ps -e -o pid=,ppid= | awk -v root="$postgres_pid" '
      { parent[$1] = $2 } END { for (p in parent) { q = p; while (q in parent && q != root) q = parent[q]; if (q == root) print p } }'); do
    sum=$((sum + $(ticks "$pid")))
  done
  echo "$sum"
}
# ferretdb_commands: the commands FerretDB says it was sent, but the driver's connection
# monitoring (hello), whatever build sent them.
ferretdb_commands() {
  [ -n "$ferretdb_debug" ] || { echo 0; return; }
  curl -sf "http://$ferretdb_debug/debug/metrics" 2>/dev/null | awk '
    index($1, "ferretdb_client_requests_total{") == 1 && $1 !~ /command="(hello|isMaster|ismaster)"/ { sum += $2 }
    END { printf "%d\n", sum }'
}
# round_trips FILE: every counter the table divides by the orders.
round_trips() {
  {
    echo "orders=$(counter orders_created_total)"
    echo "sqs=$(counter sqs_requests_total)"
    echo "ses=$(counter ses_requests_total)"
    for path in request worker lock other; do
      echo "mongo_$path=$(series mongodb_commands_total "path=\"$path\"")"
    done
    echo "ferretdb_commands=$(ferretdb_commands)"
    echo "ferretdb_ticks=$(ticks "$ferretdb_pid")"
    echo "postgres_ticks=$(postgres_ticks)"
    echo "service_ticks=$(( $(ticks "$service_pid") + $(ticks "$worker_pid") ))"
    echo "at=$(date +%s.%N)"
  } >"$1"
  # The breakdown by collection and command, for reading after the run.
  metrics 2>/dev/null | grep '^mongodb_commands_total{' >"$1.commands" || true
}
# delta KEY: how much KEY grew during the phase.
delta() {
  local a b
  a="$(sed -n "s/^$1=//p" "$out/real-before.counters")"
  b="$(sed -n "s/^$1=//p" "$out/real-after.counters")"
  calc "%.6f" "${b:-0} - ${a:-0}"
}
# per_order KEY...: the sum of the KEYs' growth per order created in the phase.
per_order() {
  local orders sum=0 k
  orders="$(delta orders)"
  for k in "$@"; do sum="$(calc "%.6f" "$sum + $(delta "$k")")"; done
  calc "%.2f" "($orders > 0 ? $sum / $orders : 0)"
}

round_trips "$out/real-before.counters"
phase orders-closed --scenario order --users "$order_users" "${common[@]}"
settle
round_trips "$out/real-after.counters"

hz="$(getconf CLK_TCK)"
orders_done="$(calc "%.0f" "$(delta orders)")"
mongo_all="$(calc "%.0f" "$(delta mongo_request) + $(delta mongo_worker) + $(delta mongo_lock) + $(delta mongo_other)")"
# A build without the command counter (the "before" of an A/B run) still has FerretDB's count.
[ "$mongo_all" = 0 ] && mongo_all="$(calc "%.0f" "$(delta ferretdb_commands)")"
elapsed="$(delta at)"
ferret_cpu_s="$(calc "%.3f" "$(delta ferretdb_ticks) / $hz")"
row() { printf '%-58s %17s   %s\n' "$1" "$2" "$3"; }
{
  echo
  echo "order-service on real backends ($backends_label; FerretDB on ${BENCH_FERRETDB_HANDLER:-sqlite}; topology $topology): closed model, $order_users users," \
    "${duration} s after ${warmup} s warm-up, $(nproc) cores shared by everything"
  echo
  row "measure" "result" "target"
  row "-------" "------" "------"
  row "orders completed/s" "$(calc "%.1f" "$(get orders-closed orders_completed) / $duration")" ">= 24"
  row "POST /api/orders p50 / p99 ms" "$(ms "$(get orders-closed create_order_p50_us)") / $(ms "$(get orders-closed create_order_p99_us)")" "p99 <= 250"
  row "created / completed (window)" "$(get orders-closed orders_created) / $(get orders-closed orders_completed)" "all"
  row "completion lag p50 / p99 ms" "$(ms "$(get orders-closed lag_p50_us)") / $(ms "$(get orders-closed lag_p99_us)")" ""
  row "MongoDB commands per order, with the lock" "$(per_order mongo_request mongo_worker mongo_lock mongo_other)" "<= 9"
  row "    without the lock (MongoDB's semantics)" "$(per_order mongo_request mongo_worker mongo_other)" "<= 6"
  row "    request path / worker path" "$(per_order mongo_request) / $(per_order mongo_worker)" "request <= 3"
  row "    lock / other (start-up, background jobs)" "$(per_order mongo_lock) / $(per_order mongo_other)" ""
  row "    as FerretDB counted them (any build)" "$(per_order ferretdb_commands)" ""
  row "SQS + SES requests per order" "$(per_order sqs ses)" "<= 1"
  row "    SQS / SES" "$(per_order sqs) / $(per_order ses)" ""
  row "service CPU ms per order" "$(calc "%.1f" "($orders_done > 0 ? 1000 * $(delta service_ticks) / $hz / $orders_done : 0)")" ""
  row "FerretDB CPU % of one core (phase and drain)" "$(calc "%.0f" "100 * $ferret_cpu_s / $elapsed")" ""
  row "FerretDB CPU ms per command" "$(calc "%.2f" "($mongo_all > 0 ? 1000 * $ferret_cpu_s / $mongo_all : 0)")" ""
  if [ -n "$postgres_pid" ]; then
    pg_cpu_s="$(calc "%.3f" "$(delta postgres_ticks) / $hz")"
    row "PostgreSQL CPU % of one core / ms per command" "$(calc "%.0f" "100 * $pg_cpu_s / $elapsed") / $(calc "%.2f" "($mongo_all > 0 ? 1000 * $pg_cpu_s / $mongo_all : 0)")" ""
  fi
  echo
  echo "orders counted: $orders_done (the phase's warm-up included, after the worker drained them)"
  echo
} | tee "$out/table.txt"
