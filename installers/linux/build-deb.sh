#!/usr/bin/env bash
# Packs the Duress agent into a .deb with dpkg-deb from a staged tree, with the same metadata as
# the Tauri bundler settings in src-tauri/tauri.conf.json (bundle.linux.deb): the same Depends,
# the same extra files, the same postinst. Why not `cargo tauri build`: the Tauri CLI is not
# part of the toolchain (installing it compiles for 10+ minutes on CI's 2 cores) and it insists
# on a release build; this script packs any binary — tests pack the debug build, releases pack
# `cargo build --release --features tauri/custom-protocol` (see .github/workflows/release.yml).
#
#   installers/linux/build-deb.sh BINARY VERSION OUTDIR     (prints the .deb's path)
set -euo pipefail

bin=$1 version=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$bin" "$stage/usr/bin/duress-agent"
install -D -m 0644 "$here/duress-agent.desktop" "$stage/etc/xdg/autostart/duress-agent.desktop"
# The systemd user service (Restart=always), enabled for every user by postinst.
install -D -m 0644 "$here/duress-agent.service" "$stage/usr/lib/systemd/user/duress-agent.service"
install -D -m 0644 "$here/agent.toml.example" "$stage/etc/duress/agent.toml.example"
install -D -m 0644 "$root/src-tauri/icons/128x128.png" \
    "$stage/usr/share/icons/hicolor/128x128/apps/duress-agent.png"
install -d "$stage/usr/share/doc/duress-agent"
printf 'Duress agent.\nLicense: Apache-2.0\n' >"$stage/usr/share/doc/duress-agent/copyright"

mkdir -p "$stage/DEBIAN"
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
# Keep Depends in step with src-tauri/tauri.conf.json bundle.linux.deb.depends.
cat >"$stage/DEBIAN/control" <<CONTROL
Package: duress-agent
Version: $version
Architecture: $arch
Maintainer: Duress project <duress@example.org>
Installed-Size: $installed_kb
Depends: libayatana-appindicator3-1, libwebkit2gtk-4.1-0
Section: utils
Priority: optional
Homepage: https://github.com/duress-project/duress
Description: Duress silent panic button agent
 A tray agent that sends a signed, durable alarm to campus security when staff press a
 discreet chord. Machine policy: /etc/duress/agent.toml and /etc/duress/agent.d/*.toml.
CONTROL
printf '%s\n' /etc/duress/agent.toml.example /etc/xdg/autostart/duress-agent.desktop \
    >"$stage/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$stage/DEBIAN/postinst"
install -m 0755 "$here/postrm" "$stage/DEBIAN/postrm"
# Retires the station (duress-agent decommission) on remove, not on upgrade.
install -m 0755 "$here/prerm" "$stage/DEBIAN/prerm"

mkdir -p "$outdir"
deb="$outdir/duress-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
echo "$deb"
