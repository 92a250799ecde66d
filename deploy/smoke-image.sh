#!/usr/bin/env bash
# Build the image and check it end to end: health, a forwarded request, a block, persistence
# across a restart, two workers, a clean stop. Not part of CI (it needs a Docker engine).
#   deploy/smoke-image.sh                      # FROM python:3.11-slim
#   PYTHON_IMAGE=my/python:3.11 deploy/smoke-image.sh   # another base (an offline mirror)
# Host networking, ports 23380 (proxy), 23381 (admin), 23390 (a canned upstream).
set -euo pipefail
cd "$(dirname "$0")/.."
image=integration-gateway:smoke
py=${PYTHON:-python3}
build_args=()
[ -n "${PYTHON_IMAGE:-}" ] && build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
DOCKER_BUILDKIT=1 docker build --network host "${build_args[@]}" -t "$image" .

token=$($py -c 'import secrets;print(secrets.token_hex(24))')
volume=gw-smoke-$$
work=$(mktemp -d)
upstream_pid=""
cleanup() {
  docker rm -f gw-smoke >/dev/null 2>&1 || true
  docker volume rm "$volume" >/dev/null 2>&1 || true
  [ -n "$upstream_pid" ] && kill "$upstream_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/upstream.py" <<'PY'
import asyncio
from aiohttp import web
async def answer(request):
    await request.read()
    return web.Response(text="<ok/>", content_type="text/xml")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=23390, print=None)
PY
$py "$work/upstream.py" & upstream_pid=$!

run() {
  docker run -d --name gw-smoke --network host -e GATEWAY_ADMIN_TOKEN="$token" \
    -e GATEWAY_UPSTREAM=http://127.0.0.1:23390 -e GATEWAY_LISTEN=127.0.0.1:23380 \
    -e GATEWAY_ADMIN_LISTEN=127.0.0.1:23381 -v "$volume:/var/lib/gateway" "$image" "$@" >/dev/null
  for _ in $(seq 1 60); do
    curl -fs http://127.0.0.1:23381/readyz >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  docker logs gw-smoke; echo "FAIL: not ready"; exit 1
}
admin() { curl -fsS -X "$1" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
            "http://127.0.0.1:23381/admin/v1$2" ${3:+-d "$3"}; }
soap_code() {  # the fault code, or "forwarded"
  curl -s -X POST http://127.0.0.1:23380/services/NetSuitePort_2019_2 -H 'Content-Type: text/xml; charset=utf-8' \
    -H 'SOAPAction: get' --data-binary @"$work/envelope.xml" \
    | $py -c 'import re,sys;b=sys.stdin.read();m=re.search(r"<platformFaults:code>([^<]*)",b);print(m.group(1) if m else ("forwarded" if b=="<ok/>" else b))'
}
expect() { [ "$1" = "$2" ] || { docker logs gw-smoke | tail -20; echo "FAIL: $3: got $1, expected $2"; exit 1; }; echo "ok: $3"; }

run
expect "$(docker exec gw-smoke id -u)" 10001 "runs as uid 10001"
admin PUT /accounts/TSTDRV1 '{"require_approval": false}' >/dev/null
created=$(admin POST /accounts/TSTDRV1/integrations '{"name": "image smoke"}')
id=$(echo "$created" | $py -c 'import json,sys;print(json.load(sys.stdin)["id"])')
app=$(echo "$created" | $py -c 'import json,sys;print(json.load(sys.stdin)["application_id"])')
cat > "$work/envelope.xml" <<XML
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:msg="urn:messages_2019_2.platform.webservices.netsuite.com" xmlns:core="urn:core_2019_2.platform.webservices.netsuite.com"><soapenv:Header><msg:applicationInfo><msg:applicationId>$app</msg:applicationId></msg:applicationInfo><msg:passport><core:email>ann@example.com</core:email><core:password>pw</core:password><core:account>TSTDRV1</core:account><core:role internalId="3"/></msg:passport></soapenv:Header><soapenv:Body><msg:get><msg:baseRef internalId="1" type="customer"/></msg:get></soapenv:Body></soapenv:Envelope>
XML
expect "$(soap_code)" forwarded "a Passport request with the application ID is forwarded"
admin PATCH "/accounts/TSTDRV1/integrations/$id" '{"state": "blocked"}' >/dev/null
expect "$(soap_code)" WS_REQUEST_BLOCKED "a blocked record is refused"
curl -fs http://127.0.0.1:23381/metrics | grep -q '^gateway_requests_total' && echo "ok: /metrics"
for _ in $(seq 1 40); do
  status=$(docker inspect gw-smoke --format '{{.State.Health.Status}}')
  [ "$status" = healthy ] && break
  sleep 1
done
expect "$status" healthy "HEALTHCHECK"
docker stop gw-smoke >/dev/null
expect "$(docker inspect gw-smoke --format '{{.State.ExitCode}}')" 0 "docker stop drains and exits 0"
docker rm gw-smoke >/dev/null
run --workers 2
expect "$(soap_code)" WS_REQUEST_BLOCKED "the block survives a restart (two workers now)"
docker stop gw-smoke >/dev/null
expect "$(docker inspect gw-smoke --format '{{.State.ExitCode}}')" 0 "two workers stop cleanly"
echo "image smoke test passed"
