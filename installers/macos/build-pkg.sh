#!/bin/bash
# Builds the Duress agent's macOS installer package (Tauri has no .pkg target). Runs on macOS
# only (pkgbuild, productbuild and productsign ship with Xcode's command line tools).
#
#   installers/macos/build-pkg.sh --app path/to/Duress.app --version 0.1.0 [--out DIR]
#                                 [--sign "Developer ID Installer: …"]
#
# The .app comes from `cargo tauri build --bundles app` (signed with a stable "Developer ID
# Application" identity: the Keychain prompts on every read when the signature changes). The
# package installs /Applications/Duress.app and /Library/LaunchAgents/org.duress.agent.plist;
# its postinstall starts the agent for the console user. Policy is separate: the MDM profile
# (org.duress.agent.mobileconfig) or /Library/Preferences/org.duress.agent.plist.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
app="" version="" out="$here/../../target/installers" sign=""
while [ $# -gt 0 ]; do
    case "$1" in
        --app) app=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --sign) sign=$2; shift 2 ;;
        *) echo "build-pkg.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$(uname -s)" != "Darwin" ]; then
    echo "build-pkg.sh: runs on macOS only (pkgbuild/productbuild); on Linux use installers/build.sh pkg-scripts" >&2
    exit 1
fi
[ -d "$app" ] || { echo "build-pkg.sh: --app must name the Duress.app bundle" >&2; exit 2; }
[ -n "$version" ] || { echo "build-pkg.sh: --version is required" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/Applications" "$root/Library/LaunchAgents" "$out"
ditto "$app" "$root/Applications/Duress.app"
install -m 0644 "$here/LaunchAgents/org.duress.agent.plist" "$root/Library/LaunchAgents/"

# Never relocate the app to wherever a copy happens to live (pkgbuild's default for bundles).
pkgbuild --analyze --root "$root" "$work/components.plist"
/usr/libexec/PlistBuddy -c "Set :0:BundleIsRelocatable false" "$work/components.plist"

pkgbuild --root "$root" \
    --component-plist "$work/components.plist" \
    --identifier org.duress.agent.pkg \
    --version "$version" \
    --scripts "$here/scripts" \
    --install-location / \
    "$work/duress-agent-component.pkg"

productbuild --package "$work/duress-agent-component.pkg" "$work/duress-agent-unsigned.pkg"

pkg="$out/duress-agent-$version.pkg"
if [ -n "$sign" ]; then
    productsign --sign "$sign" "$work/duress-agent-unsigned.pkg" "$pkg"
    pkgutil --check-signature "$pkg"
else
    echo "build-pkg.sh: unsigned package (pass --sign for distribution; Jamf and MDM need a signed pkg)" >&2
    cp "$work/duress-agent-unsigned.pkg" "$pkg"
fi
echo "$pkg"
