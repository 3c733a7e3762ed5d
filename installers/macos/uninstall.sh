#!/bin/sh
# Removes the Duress agent from a Mac: stops it in every GUI session, removes the LaunchAgent
# and the app, and forgets the package receipt. The machine policy
# (/Library/Preferences/org.duress.agent.plist) is kept unless --purge is given; an MDM profile
# is removed from the MDM, not here. First, best-effort, each logged-in user's station is
# retired at its receivers (`duress-agent decommission` in that user's GUI session, where their
# Keychain holds the device key): it delivers queued alarms first and refuses while one is
# undelivered, and removes the device key when every receiver confirmed. A user for whom it did
# not succeed keeps the key in their Keychain (item "org.duress.agent"): retire the station from
# the console (docs/deployment.md, "Uninstalling").
#
#   sudo ./uninstall.sh [--purge]
set -eu
label="org.duress.agent"

if [ "$(/usr/bin/id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (sudo)" >&2
    exit 1
fi

agent="/Applications/Duress.app/Contents/MacOS/duress-agent"
for uid in $(/bin/ps -axo uid=,comm= | /usr/bin/awk '$2 ~ /loginwindow$/ {print $1}' | /usr/bin/sort -u); do
    if [ -x "$agent" ]; then
        user=$(/usr/bin/id -un "$uid" 2>/dev/null || true)
        if [ -n "$user" ]; then
            /bin/launchctl asuser "$uid" /usr/bin/sudo -u "$user" "$agent" decommission \
                || echo "uninstall.sh: station not retired for $user; retire it from the console" >&2
        fi
    fi
    /bin/launchctl bootout "gui/$uid/$label" 2>/dev/null || true
done
/bin/rm -f "/Library/LaunchAgents/$label.plist"
/bin/rm -rf "/Applications/Duress.app"
/usr/sbin/pkgutil --forget "$label.pkg" >/dev/null 2>&1 || true
if [ "${1:-}" = "--purge" ]; then
    /bin/rm -f "/Library/Preferences/$label.plist"
fi
echo "Duress agent removed."
