#!/usr/bin/env bash
# The Keygen guide's "email the user before the license expires", with
# scheduled events: when a license is created (or renewed), the application
# schedules `license.expiring-soon` 3 days before its expiry under one
# schedule key; a renewal posts the new time under the same key, which
# moves the reminder (the pending one is replaced in the same store batch);
# a deletion cancels it.
#
#   bash examples/license_expiry_reminder.sh          # expiry in 30 days
#   QUICK=1 bash examples/license_expiry_reminder.sh  # reminder due in 20 s, moved to 40 s
#
# Against the default router.toml (account demo); run `switchyard listen`
# (README) to watch the reminder arrive. Needs curl, python3 (JSON) and GNU date.
set -euo pipefail
URL=${SWITCHYARD_URL:-http://127.0.0.1:8686}
ACCOUNT=${SWITCHYARD_ACCOUNT:-demo}
TOKEN=${SWITCHYARD_TOKEN:-demo-token-change-me}
LICENSE=${LICENSE:-9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a}
KEY="license:$LICENSE:expiring-soon"
now=$(date -u +%s)
if [ -n "${QUICK:-}" ]; then
    expiry=$((now + 3 * 86400 + 20))     # reminder due in 20 s
    renewed=$((now + 3 * 86400 + 40))    # after renewal: in 40 s
else
    expiry=$((now + 30 * 86400))
    renewed=$((now + 330 * 86400))       # renewed early, for 300 more days
fi
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

post() {  # post <json>
    curl -sS "$URL/v1/accounts/$ACCOUNT/events" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d "$1"
    echo
}
license_doc() {  # license_doc <expiry>
    printf '{"data": {"id": "%s", "type": "licenses", "attributes": {"name": "Acme Pro", "expiry": "%s", "status": "ACTIVE"}}}' \
        "$LICENSE" "$(iso "$1")"
}
schedule_reminder() {  # schedule_reminder <expiry>
    post "{\"event\": \"license.expiring-soon\", \"payload\": $(license_doc "$1"),
           \"deliver_at\": \"$(iso $(($1 - 3 * 86400)))\", \"schedule_key\": \"$KEY\"}"
}

echo "== license created (expires $(iso $expiry)): deliver it now, schedule the reminder"
post "{\"event\": \"license.created\", \"payload\": $(license_doc $expiry)}"
schedule_reminder $expiry

echo "== license renewed (expires $(iso $renewed)): the same key moves the reminder (see meta.replaced)"
post "{\"event\": \"license.renewed\", \"payload\": $(license_doc $renewed)}"
schedule_reminder $renewed

echo "== the scheduled reminders of this license"
curl -sS "$URL/v1/accounts/$ACCOUNT/webhook-events?filter%5Bevent%5D=license.expiring-soon&page%5Bsize%5D=2" \
    -H "Authorization: Bearer $TOKEN" \
  | python3 -c 'import json,sys
for e in json.load(sys.stdin)["data"]:
    a = e["attributes"]
    print(e["id"], a["status"], "due", a.get("deliverAt"), a.get("scheduleKey"), "replaced by " + a["replacedBy"] if a.get("replacedBy") else "")'

echo "== (on license.deleted, cancel it:)"
echo "curl -X DELETE -H 'Authorization: Bearer $TOKEN' $URL/v1/accounts/$ACCOUNT/scheduled/$KEY"
