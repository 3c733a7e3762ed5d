#!/usr/bin/env bash
# Packs the Duress receiver into a .deb with dpkg-deb: the binary, the hardened systemd unit
# (not enabled: postinst creates the user and the 0700 data directory and starts nothing), the
# default configuration /etc/duress/receiver.toml (a conffile) and the operator's guide.
#
#   installers/linux/receiver/build-deb.sh BINARY VERSION OUTDIR     (prints the .deb's path)
set -euo pipefail

bin=$1 version=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$bin" "$stage/usr/bin/duress-receiver"
install -D -m 0644 "$here/duress-receiver.service" \
    "$stage/usr/lib/systemd/system/duress-receiver.service"
install -D -m 0644 "$here/receiver.toml" "$stage/etc/duress/receiver.toml"
install -D -m 0644 "$root/docs/operations.md" "$stage/usr/share/doc/duress-receiver/operations.md"
printf 'Duress receiver.\nLicense: Apache-2.0\n' >"$stage/usr/share/doc/duress-receiver/copyright"

mkdir -p "$stage/DEBIAN"
installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: duress-receiver
Version: $version
Architecture: $arch
Maintainer: Duress project <duress@example.org>
Installed-Size: $installed_kb
Depends: adduser, libc6
Recommends: postgresql-client
Section: net
Priority: optional
Homepage: https://github.com/duress-project/duress
Description: Duress silent panic button receiver and security console
 Verifies, stores and groups signed duress alarms from Duress agents and serves the live
 console security officers work from. Configuration: /etc/duress/receiver.toml; service:
 duress-receiver.service (not started until configured).
CONTROL
printf '%s\n' /etc/duress/receiver.toml >"$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$stage/DEBIAN/$script"
done

mkdir -p "$outdir"
deb="$outdir/duress-receiver_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >&2
echo "$deb"
