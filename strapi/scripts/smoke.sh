#!/usr/bin/env bash
# Smoke test of the kb-ingest Strapi app against a RUNNING instance (it starts nothing).
#
#   STRAPI_URL=http://127.0.0.1:1338 scripts/smoke.sh
#
# It registers the first admin (or logs in when one exists), creates a full-access API token,
# then checks over HTTP what kb-ingest relies on and compares the bodies with the captures
# from a real Strapi 5.54 in ../shared/strapi-examples/rest (CAPTURES=... to point elsewhere).
# Optional: WEBHOOK_LOG=<jsonl file written by a receiver> also checks the webhook deliveries.
# Exit status: 0 when every check passed, 1 otherwise.
set -u

STRAPI_URL="${STRAPI_URL:-http://127.0.0.1:1338}"
HERE="$(cd "$(dirname "$0")" && pwd)"
CAPTURES="${CAPTURES:-$HERE/../../../shared/strapi-examples/rest}"
ADMIN_EMAIL="${SMOKE_ADMIN_EMAIL:-admin@example.com}"
ADMIN_PASSWORD="${SMOKE_ADMIN_PASSWORD:-Smoke-Test-Passw0rd}"
CHECK="python3 $HERE/smoke_check.py"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

PASS=0
FAIL=0
STATUS=
BODY="$TMP/body.json"
AUTH=()

ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }

# req METHOD PATH [JSON]  -> $STATUS, body in $BODY
req() {
  local method="$1" path="$2" data="${3:-}"
  local args=(-sS -o "$BODY" -w '%{http_code}' -X "$method" "${AUTH[@]}")
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
  fi
  STATUS="$(curl "${args[@]}" "$STRAPI_URL$path")" || STATUS="curl-error"
}

expect_status() {  # expect_status CODE LABEL
  if [ "$STATUS" = "$1" ]; then ok "$2 -> $STATUS"; else fail "$2 -> $STATUS, expected $1: $(head -c 400 "$BODY")"; fi
}

have_captures() { [ -d "$CAPTURES" ]; }

compare() {  # compare shape|equal CAPTURE_FILE LABEL
  if ! have_captures; then echo "skip - $3 (no captures at $CAPTURES)"; return; fi
  local msg
  if msg="$($CHECK "$1" "$BODY" "$CAPTURES/$2" 2>&1)"; then ok "$3"; else fail "$3: $msg"; fi
}

expect() {  # expect PYEXPR LABEL   (b = response body)
  local msg
  if msg="$($CHECK expr "$BODY" "$1" 2>&1)"; then ok "$2"; else fail "$2: $msg"; fi
}

json_get() { python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"b": b}))' "$BODY" "$1"; }

echo "# kb-ingest Strapi smoke test against $STRAPI_URL"

# --- admin and API token ------------------------------------------------------------------
req POST /admin/register-admin "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\",\"firstname\":\"Smoke\",\"lastname\":\"Test\"}"
if [ "$STATUS" = "200" ] || [ "$STATUS" = "201" ]; then
  ok "register first admin -> $STATUS"
else
  req POST /admin/login "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}"
  expect_status 200 "admin exists already: log in"
fi
ADMIN_JWT="$(json_get 'b["data"]["token"]' 2>/dev/null)"
if [ -z "$ADMIN_JWT" ]; then echo "cannot get an admin token; giving up"; exit 1; fi

AUTH=(-H "Authorization: Bearer $ADMIN_JWT")
req POST /admin/api-tokens "{\"name\":\"kb-ingest-smoke-$(date +%s)-$$\",\"description\":\"smoke test\",\"type\":\"full-access\",\"lifespan\":null}"
expect_status 201 "create full-access API token"
API_TOKEN="$(json_get 'b["data"]["accessKey"]' 2>/dev/null)"
if [ -z "$API_TOKEN" ]; then echo "no accessKey in the answer; giving up"; exit 1; fi
AUTH=(-H "Authorization: Bearer $API_TOKEN")

# --- files ---------------------------------------------------------------------------------
req GET /api/files
expect_status 200 "GET /api/files with the API token"
AUTH_SAVE=("${AUTH[@]}"); AUTH=()
req GET /api/files
[ "$STATUS" = "401" ] || [ "$STATUS" = "403" ] && ok "GET /api/files without a token -> $STATUS" || fail "GET /api/files without a token -> $STATUS, expected 401/403"
AUTH=("${AUTH_SAVE[@]}")

req POST /api/files '{"data":{"name":"report-q3.pdf","storage_key":"companies/42/bots/7/report-q3.pdf","company_id":42,"bot_id":7,"user_email":"alice@example.com","size_bytes":"5368709120","mime_type":"application/pdf"}}'
expect_status 201 "create file"
compare shape 01-create-file.json "create file: shape as captured"
expect 'b["data"]["size_bytes"] == "5368709120"' "size_bytes (biginteger) comes back as the string \"5368709120\""
DOC="$(json_get 'b["data"]["documentId"]')"
CREATED_AT="$(json_get 'b["data"]["createdAt"]')"

req PUT "/api/files/$DOC" '{"data":{"name":"report-q3-final.pdf","size_bytes":"123456"}}'
expect_status 200 "update file"
compare shape 02-update-file.json "update file: shape as captured"

req GET "/api/files/$DOC"
expect_status 200 "GET file"
compare shape 03-get-file.json "GET file: shape as captured"
expect 'b["data"]["name"] == "report-q3-final.pdf" and b["data"]["size_bytes"] == "123456" and b["meta"] == {}' "GET file: updated values, meta {}"

SINCE="$(python3 -c 'import sys,datetime; t=datetime.datetime.fromisoformat(sys.argv[1].replace("Z","+00:00")); print((t-datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"))' "$CREATED_AT")"
req GET "/api/files?filters%5BupdatedAt%5D%5B%24gt%5D=$SINCE&pagination%5Bpage%5D=1&pagination%5BpageSize%5D=25"
expect_status 200 "reconciliation listing (filters[updatedAt][\$gt], pagination)"
compare shape 04-list-files.json "listing: shape as captured"
expect "any(e['documentId'] == '$DOC' for e in b['data']) and b['meta']['pagination']['page'] == 1" "listing holds the file and pagination meta"
req GET "/api/files?filters%5BupdatedAt%5D%5B%24gt%5D=2999-01-01T00:00:00.000Z"
expect 'b["data"] == [] and b["meta"]["pagination"]["total"] == 0' "listing after a future updatedAt is empty"

req DELETE "/api/files/$DOC"
expect_status 204 "DELETE file"
expect 'b is None' "DELETE answers an empty body"
req GET "/api/files/$DOC"
expect_status 404 "GET file after delete"
compare equal 06-get-file-after-delete.json "404 body as captured"
# Strapi 5's core delete does not look the document up first: deleting a missing one is 204
# too (kb-ingest must take 204 and 404 both as "gone").
req DELETE "/api/files/$DOC"
expect_status 204 "DELETE file again (already gone: Strapi 5 answers 204, not 404)"

# --- preferences ---------------------------------------------------------------------------
# leftovers of an interrupted run
req GET "/api/user-notification-preferences/by-user/42/7/bob%40example.com"
if [ "$STATUS" = "200" ] && [ "$(json_get 'b["fallback_applied"]')" = "False" ]; then
  req DELETE "/api/user-notification-preferences/$(json_get 'b["data"]["documentId"]')"
fi

req GET "/api/user-notification-preferences/by-user/42/7/alice%40example.com"
expect_status 200 "by-user fallback"
compare equal 07-by-user-fallback.json "by-user fallback: body as captured (defaults, fallback_applied true)"

req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":7,"user_email":"bob@example.com","batch_size_threshold":10,"email_format":"text"}}'
expect_status 201 "create preference"
compare shape 08-create-preference.json "create preference: shape as captured"
PREF="$(json_get 'b["data"]["documentId"]')"

req GET "/api/user-notification-preferences/by-user/42/7/Bob%40Example.com"
expect_status 200 "by-user stored, e-mail in another case"
compare shape 09-by-user-stored.json "by-user stored: shape as captured"
expect "b['data']['documentId'] == '$PREF' and b['fallback_applied'] is False and b['cache_hit'] is False and b['data']['batch_size_threshold'] == 10" "by-user stored: the created entry, fallback_applied false"

req GET "/api/user-notification-preferences/by-user/42/8/bob%40example.com"
expect 'b["fallback_applied"] is True and b["data"]["bot_id"] == 8' "by-user for another bot falls back"

req GET "/api/user-notification-preferences/by-user/abc/7/x%40example.com"
expect_status 400 "by-user with companyId abc"
compare equal 11-by-user-bad-request.json "400 body as captured"
req GET "/api/user-notification-preferences/by-user/42/7.5/x%40example.com"
expect_status 400 "by-user with botId 7.5"

req GET "/api/user-notification-preferences/$PREF"
expect_status 200 "core GET /:id still works next to the custom routes"

req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":7,"user_email":"BOB@example.com"}}'
expect_status 409 "duplicate preference (same company, bot, e-mail in another case)"
expect 'b["error"]["status"] == 409 and b["error"]["name"] == "ConflictError"' "409 body is a Strapi error"

req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":9,"user_email":"bob@example.com"}}'
expect_status 201 "same e-mail for another bot is allowed"
OTHER="$(json_get 'b["data"]["documentId"]')"
req PUT "/api/user-notification-preferences/$OTHER" '{"data":{"bot_id":7}}'
expect_status 409 "update onto an existing (company, bot, e-mail) -> 409"
req DELETE "/api/user-notification-preferences/$OTHER"
expect_status 204 "delete the second preference"

req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":7,"user_email":"range@example.com","batch_size_threshold":0}}'
expect_status 400 "batch_size_threshold 0 (min 1)"
req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":7,"user_email":"range@example.com","notification_delay_minutes":1441}}'
expect_status 400 "notification_delay_minutes 1441 (max 1440)"
req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":7,"user_email":"range@example.com","email_format":"pdf"}}'
expect_status 400 "email_format pdf (enum html|text)"
req POST /api/user-notification-preferences '{"data":{"company_id":42,"bot_id":7,"user_email":"not-an-email"}}'
expect_status 400 "user_email not an e-mail"

req POST /api/user-notification-preferences/bulk-get '{"users":[{"company_id":42,"bot_id":7,"user_email":"BOB@example.com"},{"company_id":42,"bot_id":7,"user_email":"carol@example.com"}]}'
expect_status 200 "bulk-get"
expect "b['data']['42:7:BOB@example.com']['documentId'] == '$PREF' and b['data']['42:7:carol@example.com'] is None and b['missing_preferences'] == ['42:7:carol@example.com'] and b['processed_count'] == 2" "bulk-get: stored entry, null + missing for the unknown user"
USERS101="$(python3 -c 'import json; print(json.dumps({"users":[{"company_id":1,"bot_id":1,"user_email":f"u{i}@example.com"} for i in range(101)]}))')"
req POST /api/user-notification-preferences/bulk-get "$USERS101"
expect_status 400 "bulk-get with 101 users"
req POST /api/user-notification-preferences/bulk-get '{"users":[{"company_id":"x","bot_id":7,"user_email":"a@example.com"}]}'
expect_status 400 "bulk-get with a non-integer company_id"

req DELETE "/api/user-notification-preferences/$PREF"
expect_status 204 "DELETE preference"

# --- the least-privilege token the README documents for kb-ingest ---------------------------
AUTH=(-H "Authorization: Bearer $ADMIN_JWT")
F=api::file.file
P=api::user-notification-preference.user-notification-preference
B=api::bot-notification-setting.bot-notification-setting
req POST /admin/api-tokens "{\"name\":\"kb-ingest-least-$(date +%s)-$$\",\"type\":\"custom\",\"lifespan\":null,\"permissions\":[\"$F.find\",\"$F.findOne\",\"$F.delete\",\"$P.find\",\"$P.findByUser\",\"$P.bulkGet\",\"$B.find\"]}"
expect_status 201 "create the kb-ingest custom API token (documented permissions)"
AUTH=(-H "Authorization: Bearer $(json_get 'b["data"]["accessKey"]')")
req GET "/api/files?pagination%5BpageSize%5D=1"
expect_status 200 "kb-ingest token: list files"
req GET "/api/files/does-not-exist"
expect_status 404 "kb-ingest token: GET a missing file"
req DELETE "/api/files/does-not-exist"
expect_status 204 "kb-ingest token: DELETE a file"
req GET "/api/user-notification-preferences/by-user/42/7/alice%40example.com"
expect_status 200 "kb-ingest token: by-user"
req POST /api/user-notification-preferences/bulk-get '{"users":[]}'
expect_status 200 "kb-ingest token: bulk-get"
req GET /api/user-notification-preferences
expect_status 200 "kb-ingest token: list preferences"
req POST /api/files '{"data":{"name":"x","storage_key":"x","company_id":1,"bot_id":1}}'
expect_status 403 "kb-ingest token cannot create files"
req POST /api/user-notification-preferences '{"data":{"company_id":1,"bot_id":1,"user_email":"x@example.com"}}'
expect_status 403 "kb-ingest token cannot create preferences"
AUTH=(-H "Authorization: Bearer $API_TOKEN")

# --- webhook deliveries (optional) ----------------------------------------------------------
if [ -n "${WEBHOOK_LOG:-}" ]; then
  sleep 2
  if python3 - "$WEBHOOK_LOG" "$DOC" "$PREF" <<'PY'
import json, sys
log, doc, pref = sys.argv[1:4]
seen = [json.loads(l) for l in open(log) if l.strip()]
want = [("entry.create", "file", doc), ("entry.update", "file", doc), ("entry.delete", "file", doc),
        ("entry.create", "user-notification-preference", pref), ("entry.delete", "user-notification-preference", pref)]
missing = [w for w in want if not any(s["body"].get("event") == w[0] and s["body"].get("model") == w[1]
           and s["body"].get("entry", {}).get("documentId") == w[2] and (s.get("auth") or "").startswith("Bearer ") for s in seen)]
if missing:
    print("missing deliveries:", missing); sys.exit(1)
print(f"{len(seen)} deliveries in the log, all expected ones present with a Bearer header")
PY
  then ok "webhook deliveries for file create/update/delete and preference create/delete"
  else fail "webhook deliveries"; fi
fi

echo "# $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
