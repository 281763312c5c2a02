#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against a real server: `conclave serve` on a free port
# with a throw-away SQLite data folder, one signed-up user (an administrator, the first account
# in dev) with an agent and a conversation, then `schemathesis run` over the published OpenAPI
# document. Every response is checked: no 5xx, status codes, content types and bodies as
# declared. The server is stopped whatever happens.
#
# Usage: scripts/fuzz-api.sh   (make test-fuzz builds the binary and the venv first)
# Environment: CONCLAVE_BIN (default target/debug/conclave), SCHEMATHESIS (default
# .venv/bin/schemathesis), FUZZ_MAX_EXAMPLES (default 50), FUZZ_TIME_LIMIT seconds (default 200), FUZZ_SEED
# (a fixed seed to replay a run; random by default, and printed at the end).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CONCLAVE_BIN:-$root/target/debug/conclave}
schemathesis=${SCHEMATHESIS:-$root/.venv/bin/schemathesis}
max_examples=${FUZZ_MAX_EXAMPLES:-50}
time_limit=${FUZZ_TIME_LIMIT:-200}

work=$(mktemp -d "${TMPDIR:-/tmp}/conclave-fuzz.XXXXXX")
server=""
cleanup() {
  local status=$?
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -f $work/server.log ]]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -n 40 "$work/server.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

: >"$work/server.log"
# Only this server's settings: nothing from the caller's CONCLAVE_* environment leaks in.
env -u CONCLAVE_CONFIG $(env | sed -n 's/^\(CONCLAVE_[A-Z0-9_]*\)=.*/-u \1/p') \
  CONCLAVE_PROFILE=dev \
  CONCLAVE_LISTEN=127.0.0.1:0 \
  CONCLAVE_DATA_DIR="$work/data" \
  CONCLAVE_LOG=warn,conclave::lifecycle=info \
  CONCLAVE_RATE_LIMIT_PER_MINUTE=1000000 \
  CONCLAVE_LOGIN_ATTEMPTS_PER_MINUTE=1000000 \
  CONCLAVE_PASSWORD_HASH_MEMORY_KIB=1024 \
  CONCLAVE_PASSWORD_HASH_ITERATIONS=1 \
  CONCLAVE_ACCESS_TOKEN_TTL_SECONDS=3600 \
  CONCLAVE_SESSION_IDLE_MINUTES=60 \
  "$bin" serve >"$work/server.log" 2>&1 &
server=$!

addr=""
for _ in $(seq 1 600); do
  addr=$(sed -n 's/.*"addr":"\([0-9.:]*\)".*"msg":"listening".*/\1/p; s/.*"msg":"listening".*"addr":"\([0-9.:]*\)".*/\1/p' "$work/server.log" | head -n1)
  [[ -n $addr ]] && break
  kill -0 "$server" 2>/dev/null || { echo "conclave serve exited before listening" >&2; exit 1; }
  sleep 0.1
done
[[ -n $addr ]] || { echo "conclave serve did not log its listening line within 60 s" >&2; exit 1; }
base="http://$addr"

# One administrator (the first account in dev) with something to look at, so that path ids exist:
# an agent and a conversation with a message for reading and updating, others for deleting, a
# second user for the user administration routes, an API key, and a library with a document
# (the second user a member of it), with another library and document to delete.
post() { curl -fsS -X POST "$base$1" -H 'content-type: application/json' ${token:+-H "authorization: Bearer $token"} -d "$2"; }
# The field at a dotted path of the JSON on stdin.
json() { python3 -c 'import json,sys,functools; print(functools.reduce(lambda v,k: v[k], sys.argv[1].split("."), json.load(sys.stdin)))' "$1"; }
password=correct-horse-battery-staple-42
token=""
token=$(post /api/v1/auth/signup "{\"email\":\"fuzz@example.test\",\"password\":\"$password\",\"display_name\":\"Fuzz\"}" | json access_token)
agent=$(post /api/v1/agents '{"name":"Fuzz agent","model":"conclave-demo"}' | json id)
doomed_agent=$(post /api/v1/agents '{"name":"Agent to delete","model":"conclave-demo"}' | json id)
conversation=$(post /api/v1/conversations "{\"agent_id\":\"$agent\",\"title\":\"Fuzz\"}" | json id)
doomed_conversation=$(post /api/v1/conversations "{\"agent_id\":\"$agent\",\"title\":\"To delete\"}" | json id)
message=$(post "/api/v1/conversations/$conversation/messages" '{"content":"hello"}' | json user_message.id)
member=$(post /api/v1/admin/users '{"email":"member@example.test","display_name":"Member","role":"member"}' | json id)
api_key=$(post /api/v1/api-keys '{"name":"fuzz"}' | json id)
# A library with a document in it (and one of each to delete), the member as a reader.
library=$(post /api/v1/libraries '{"name":"Fuzz library"}' | json id)
doomed_library=$(post /api/v1/libraries '{"name":"Library to delete"}' | json id)
curl -fsS -X PUT "$base/api/v1/libraries/$library/members/$member" -H 'content-type: application/json' \
  -H "authorization: Bearer $token" -d '{"role":"reader"}' >/dev/null
printf 'A memo for the fuzzer.\n' >"$work/memo.txt"
upload() { curl -fsS -X POST "$base/api/v1/libraries/$library/documents" -H "authorization: Bearer $token" -F "file=@$work/memo.txt;filename=$1;type=text/plain"; }
document=$(upload memo.txt | json id)
doomed_document=$(upload doomed.txt | json id)

# The first matching [[operations]] entry gives the ids: the specific ones come first.
cat >"$work/schemathesis.toml" <<TOML
[parameters]
"path.id" = "$conversation"
"path.message_id" = "$message"

[[operations]]
include-name = "DELETE /api/v1/agents/{id}"
parameters = { "path.id" = "$doomed_agent" }

[[operations]]
include-path-regex = "^/api/v1/agents/"
parameters = { "path.id" = "$agent" }

[[operations]]
include-name = "DELETE /api/v1/conversations/{id}"
parameters = { "path.id" = "$doomed_conversation" }

[[operations]]
include-path-regex = "^/api/v1/admin/users/"
parameters = { "path.id" = "$member" }

[[operations]]
include-path-regex = "^/api/v1/api-keys/"
parameters = { "path.id" = "$api_key" }

[[operations]]
include-name = "DELETE /api/v1/libraries/{id}"
parameters = { "path.id" = "$doomed_library" }

[[operations]]
include-path-regex = "^/api/v1/libraries/"
parameters = { "path.id" = "$library", "path.user_id" = "$member" }

[[operations]]
include-name = "DELETE /api/v1/documents/{id}"
parameters = { "path.id" = "$doomed_document" }

[[operations]]
include-path-regex = "^/api/v1/documents/"
parameters = { "path.id" = "$document" }
TOML

# Excluded, with the reason:
# - POST /api/v1/me/password: a generated strong password would replace the fuzzer's own, and
#   the change ends its sessions, so the rest of the run would test only the 401 path.
# - POST /api/v1/auth/logout: ends the fuzzer's session, the same way.
# - PATCH /api/v1/admin/tenant: a generated body can switch on `require_mfa` or an IP allow-list,
#   after which every call of the run is refused (403) by design; tenant settings are covered by
#   the server and binary suites.
set +e
# From the temporary folder: schemathesis keeps its cache in the working directory.
cd "$work"
timeout --kill-after=10 "$time_limit" "$schemathesis" --config-file "$work/schemathesis.toml" run \
  "$base/api/v1/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --workers 2 \
  --request-timeout 30 \
  --generation-database none \
  --no-color \
  --exclude-name 'POST /api/v1/me/password' \
  --exclude-name 'POST /api/v1/auth/logout' \
  --exclude-name 'PATCH /api/v1/admin/tenant' \
  ${FUZZ_SEED:+--seed "$FUZZ_SEED"}
status=$?
set -e
if [[ $status -eq 124 || $status -eq 137 ]]; then
  echo "schemathesis did not finish within $time_limit s" >&2
fi
exit "$status"
