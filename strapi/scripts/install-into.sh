#!/usr/bin/env bash
# Copy kb-ingest's CMS half into an existing Strapi 5 app:
#   strapi/scripts/install-into.sh /path/to/their-strapi-app
# Copies src/api/file, user-notification-preference and bot-notification-setting (refuses to overwrite) and
# src/index.js when the app has none; otherwise prints what to merge by hand.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
APP="${1:?usage: $0 <strapi-app-dir>}"
[ -f "$APP/package.json" ] && grep -q '"@strapi/strapi": *"[~^]\?5\.' "$APP/package.json" \
  || { echo "$APP does not look like a Strapi 5 app (package.json without @strapi/strapi 5.x)"; exit 1; }
mkdir -p "$APP/src/api"
for t in file user-notification-preference bot-notification-setting; do
  if [ -e "$APP/src/api/$t" ]; then echo "$APP/src/api/$t exists already; not touching it"; exit 1; fi
done
for t in file user-notification-preference bot-notification-setting; do
  cp -r "$HERE/src/api/$t" "$APP/src/api/$t"
  echo "copied src/api/$t"
done
if [ -e "$APP/src/index.js" ] || [ -e "$APP/src/index.ts" ]; then
  echo "The app has its own src/index: merge register() and bootstrap() of $HERE/src/index.js into it by hand."
else
  cp "$HERE/src/index.js" "$APP/src/index.js"
  echo "copied src/index.js"
fi
echo "Note: 'file' uses the table kb_files (the upload plugin owns 'files'). Rebuild (npm run build) and restart."
