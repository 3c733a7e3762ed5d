#!/bin/sh
# Removes the Duress agent from a Mac: stops it in every GUI session, removes the LaunchAgent
# and the app, and forgets the package receipt. The machine policy
# (/Library/Preferences/org.duress.agent.plist) is kept unless --purge is given; an MDM profile
# is removed from the MDM, not here. Each user's device key stays in their Keychain (item
# "org.duress.agent"); revoke the device in the console.
#
#   sudo ./uninstall.sh [--purge]
set -eu
label="org.duress.agent"

if [ "$(/usr/bin/id -u)" -ne 0 ]; then
    echo "uninstall.sh: run as root (sudo)" >&2
    exit 1
fi

for uid in $(/bin/ps -axo uid=,comm= | /usr/bin/awk '$2 ~ /loginwindow$/ {print $1}' | /usr/bin/sort -u); do
    /bin/launchctl bootout "gui/$uid/$label" 2>/dev/null || true
done
/bin/rm -f "/Library/LaunchAgents/$label.plist"
/bin/rm -rf "/Applications/Duress.app"
/usr/sbin/pkgutil --forget "$label.pkg" >/dev/null 2>&1 || true
if [ "${1:-}" = "--purge" ]; then
    /bin/rm -f "/Library/Preferences/$label.plist"
fi
echo "Duress agent removed."
