# Sourced by bench/run: starts throwaway real backends on free loopback ports, the same servers
# the test suite uses (FerretDB for MongoDB, redis-server, moto for SQS and SES), and exports
# the variables the service reads for them. Servers come from scripts/test's installs under
# ~/.cache/order-service (run it once), or from FERRETDB_BIN, REDIS_SERVER_BIN, MOTO_SERVER_BIN.
#
#   start_real_backends DIR LOGDIR mongodb redis sqs ses    # any subset
#
# BENCH_FERRETDB_HANDLER=postgresql puts FerretDB on its production storage, a PostgreSQL
# server started here (Debian's `postgresql`), instead of SQLite.
#
# Every server started is recorded in `backend_pids`, for the caller's cleanup.

backend_pids=()
ferretdb_pid=""
ferretdb_debug=""

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_port PORT NAME: until something listens (at most 30 s).
wait_for_port() {
  for _ in $(seq 1 300); do
    (exec 5<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench/run: $2 did not start on port $1" >&2
  return 1
}

backend_bin() {
  local var="$1" cached="$2" fallback="$3"
  if [ -n "${!var:-}" ]; then echo "${!var}"
  elif [ -x "$cached" ]; then echo "$cached"
  else command -v "$fallback" || { echo "bench/run: no $fallback (run scripts/test once, or set $var)" >&2; return 1; }
  fi
}

# moto_call SERVICE PARAMS...: one AWS query-protocol call. moto routes by the credential scope
# of the Authorization header and does not check the signature.
moto_call() {
  local service="$1"; shift
  local args=()
  for p in "$@"; do args+=(--data-urlencode "$p"); done
  curl -sf "$AWS_ENDPOINT_URL/" "${args[@]}" \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/$AWS_REGION/$service/aws4_request, SignedHeaders=host, Signature=0"
}

xml_value() { sed -n "s#.*<$1>\([^<]*\)</$1>.*#\1#p"; }

start_moto() {
  [ -n "${AWS_ENDPOINT_URL:-}" ] && return 0
  local bin port
  bin="$(backend_bin MOTO_SERVER_BIN "$HOME/.cache/order-service/moto-venv/bin/moto_server" moto_server)" || return 1
  port="$(free_port)"
  "$bin" -H 127.0.0.1 -p "$port" >"$2/moto.log" 2>&1 &
  backend_pids+=($!)
  wait_for_port "$port" moto || return 1
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
}

# start_postgres DIR LOGDIR: FerretDB's production storage, Debian's `postgresql` server on a free
# port with a throwaway data directory (trust authentication on loopback only). PostgreSQL
# refuses to run as root, so it runs as the `postgres` user the package creates.
postgres_port=""
postgres_pid=""
start_postgres() {
  local bindir
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$bindir/postgres" ] || { echo "bench/run: no PostgreSQL server (apt-get install postgresql)" >&2; return 1; }
  local as=()
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  mkdir -p "$1" && chmod 700 "$1"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$1"
    # The postgres user must reach its directory through the bench's private ones.
    local up; up="$(dirname "$1")"
    while [ "$up" != / ] && [ "$up" != "${TMPDIR:-/tmp}" ]; do chmod o+x "$up"; up="$(dirname "$up")"; done
  fi
  "${as[@]}" "$bindir/initdb" -D "$1" -U postgres -A trust --no-sync >"$2/postgres-init.log" 2>&1 || {
    echo "bench/run: initdb failed (see $2/postgres-init.log)" >&2; return 1; }
  postgres_port="$(free_port)"
  # fsync stays on: the comparison is with a durable SQLite (FerretDB's default).
  "${as[@]}" "$bindir/postgres" -D "$1" -p "$postgres_port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$1" >"$2/postgres.log" 2>&1 &
  postgres_pid=$!
  backend_pids+=($!)
  wait_for_port "$postgres_port" PostgreSQL || return 1
  for _ in $(seq 1 100); do
    "${as[@]}" "$bindir/psql" -h 127.0.0.1 -p "$postgres_port" -U postgres -qc 'CREATE DATABASE ferretdb' \
      >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench/run: could not create FerretDB's database in PostgreSQL" >&2
  return 1
}

start_real_backends() {
  local dir="$1" logs="$2"; shift 2
  mkdir -p "$dir"
  local backend bin port
  for backend in "$@"; do
    case "$backend" in
      mongodb)
        bin="$(backend_bin FERRETDB_BIN "$HOME/.cache/order-service/bin/ferretdb" ferretdb)" || return 1
        port="$(free_port)"
        # Its debug address serves its own metrics: the commands it was sent, counted on the
        # server's side (bench/real-orders.sh), so builds without a command counter compare too.
        ferretdb_debug="127.0.0.1:$(free_port)"
        mkdir -p "$dir/ferretdb"
        local storage=(--handler=sqlite --sqlite-url="file:$dir/ferretdb/")
        if [ "${BENCH_FERRETDB_HANDLER:-sqlite}" = postgresql ]; then
          start_postgres "$dir/postgres" "$logs" || return 1
          storage=(--handler=postgresql --postgresql-url="postgres://postgres@127.0.0.1:$postgres_port/ferretdb")
        fi
        "$bin" "${storage[@]}" --listen-addr="127.0.0.1:$port" \
          --state-dir="$dir/ferretdb" --debug-addr="$ferretdb_debug" --telemetry=disable --log-level=warn \
          >"$logs/ferretdb.log" 2>&1 &
        backend_pids+=($!)
        ferretdb_pid=$! # its CPU per command is what bounds the orders/s on this server
        wait_for_port "$port" FerretDB || return 1
        export MONGODB_URI="mongodb://127.0.0.1:$port/order_service_bench"
        ;;
      redis)
        bin="$(backend_bin REDIS_SERVER_BIN /nonexistent redis-server)" || return 1
        port="$(free_port)"
        "$bin" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
          >"$logs/redis.log" 2>&1 &
        backend_pids+=($!)
        wait_for_port "$port" redis-server || return 1
        export REDIS_HOST=127.0.0.1 REDIS_PORT="$port"
        ;;
      sqs)
        start_moto "$dir" "$logs" || return 1
        local dlq arn policy
        dlq="$(moto_call sqs Action=CreateQueue QueueName=orders-dlq Version=2012-11-05 | xml_value QueueUrl)"
        arn="$(moto_call sqs Action=GetQueueAttributes "QueueUrl=$dlq" AttributeName.1=QueueArn \
          Version=2012-11-05 | xml_value Value)"
        policy="{\"deadLetterTargetArn\":\"$arn\",\"maxReceiveCount\":\"${QUEUE_MAX_RECEIVES:-5}\"}"
        AWS_SQS_QUEUE_URL="$(moto_call sqs Action=CreateQueue QueueName=orders \
          Attribute.1.Name=RedrivePolicy "Attribute.1.Value=$policy" Version=2012-11-05 | xml_value QueueUrl)"
        [ -n "$AWS_SQS_QUEUE_URL" ] || { echo "bench/run: could not create the SQS queue on moto" >&2; return 1; }
        export AWS_SQS_QUEUE_URL
        ;;
      ses)
        start_moto "$dir" "$logs" || return 1
        export AWS_SES_SENDER_EMAIL=orders@example.com
        moto_call ses Action=VerifyEmailIdentity "EmailAddress=$AWS_SES_SENDER_EMAIL" \
          Version=2010-12-01 >/dev/null || { echo "bench/run: could not verify the SES sender on moto" >&2; return 1; }
        ;;
      *) echo "bench/run: unknown backend $backend (mongodb, redis, sqs, ses)" >&2; return 1 ;;
    esac
  done
}
