#!/usr/bin/env bash
# One entry point for the Duress agent's installers. Artefacts go to target/installers/ (or
# $DURESS_INSTALLERS_OUT); the last line printed is the artefact's path.
#
#   installers/build.sh msi [--placeholder|--cross]   Windows MSI, built with wixl (msitools)
#   installers/build.sh deb [--no-build]              Debian/Ubuntu .deb, built with dpkg-deb
#   installers/build.sh deb-receiver [--no-build]     the receiver's .deb (service, config, user)
#   installers/build.sh pkg-scripts                   the macOS pkg scripts, checked and staged
#                                                     (the .pkg itself: installers/macos/build-pkg.sh, on macOS)
#
# msi: the agent .exe comes from $DURESS_AGENT_EXE if set; with --cross it is cross-built
#      (rustup target x86_64-pc-windows-gnu + Debian's gcc-mingw-w64-x86-64, a release build)
#      into $DURESS_WINDOWS_TARGET_DIR (default ~/.cache/duress-windows-target: outside the work
#      tree, so a second run, or a fresh clone on the same machine, is incremental);
#      by default an existing cross-built .exe there is used, else the MSI wraps a placeholder
#      file, says so loudly on stderr, and its name says so (…-TEST-PLACEHOLDER.msi): only the
#      table tests use it. With CI set (or DURESS_MSI_REQUIRE_AGENT=1) a placeholder is refused.
#      --placeholder forces it. WebView2Loader.dll is taken from the webview2-com-sys build
#      output of that same cross build (the crate ships Microsoft's loader; the .exe loads it at
#      start, so the MSI must carry it). WEBVIEW2_FIXED_RUNTIME_DIR=DIR adds a fixed WebView2
#      runtime (see the .wxs). DURESS_MSI_VERSION=X.Y.Z overrides the product version (the
#      upgrade test builds a higher one).
# deb: packs the binary at $DURESS_AGENT_BIN, else $CARGO_TARGET_DIR/release/duress-agent if it
#      exists, else the debug one (tests use debug; releases: cargo build --release first).
#      Without --no-build it runs `cargo build -p duress-agent` when no binary exists.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out="${DURESS_INSTALLERS_OUT:-$root/target/installers}"
target_dir=${CARGO_TARGET_DIR:-$root/target}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
version=${DURESS_MSI_VERSION:-$version}
windows_target_dir=${DURESS_WINDOWS_TARGET_DIR:-$HOME/.cache/duress-windows-target}
public_properties="RECEIVER_URL;RECEIVER_CA_SHA256;RECEIVER_ACK_KEY;ENROLL_TOKEN;LOCATION_LABEL;LOCATION_BUILDING;LOCATION_FLOOR;LOCATION_ROOM;HOTKEY"
hidden_properties="ENROLL_TOKEN;CMDLINE_ENROLL_TOKEN"

die() { echo "build.sh: $*" >&2; exit 1; }
need() {
    local tool=$1 package=$2
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: apt-get install $package"
}

build_msi() {
    local mode=${1:-auto}
    need wixl wixl
    need msibuild msitools
    need msiinfo msitools
    mkdir -p "$out"
    local stage
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' RETURN
    local exe="" loader="" suffix=""
    local cross_exe="$windows_target_dir/x86_64-pc-windows-gnu/release/duress-agent.exe"
    if [ -n "${DURESS_AGENT_EXE:-}" ] && [ "$mode" != --placeholder ]; then
        exe=$DURESS_AGENT_EXE
    elif [ "$mode" = --cross ]; then
        rustup target list --installed | grep -qx x86_64-pc-windows-gnu ||
            die "--cross needs: rustup target add x86_64-pc-windows-gnu"
        need x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64
        (cd "$root" && CARGO_TARGET_DIR=$windows_target_dir cargo build --locked --release \
            --target x86_64-pc-windows-gnu -p duress-agent --features tauri/custom-protocol) >&2
        exe=$cross_exe
    elif [ "$mode" = auto ] && [ -f "$cross_exe" ]; then
        exe=$cross_exe
    fi
    if [ -n "$exe" ]; then
        cp "$exe" "$stage/duress-agent.exe"
        # The newest webview2-com-sys build output beside the .exe (an older one may linger
        # in a long-lived cache after a version bump).
        loader=$(find "$(dirname "$exe")/build" -path '*webview2-com-sys-*/out/x64/WebView2Loader.dll' \
            -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)
        [ -n "$loader" ] || loader=${DURESS_WEBVIEW2_LOADER:-}
        if [ -z "$loader" ] || [ ! -f "$loader" ]; then die "no WebView2Loader.dll beside $exe (the agent cannot start without it): set DURESS_WEBVIEW2_LOADER"; fi
    else
        if [ -n "${CI:-}" ] || [ -n "${DURESS_MSI_REQUIRE_AGENT:-}" ]; then
            [ "$mode" = --placeholder ] ||
                die "no Windows build of the agent and a placeholder MSI is refused here (CI / DURESS_MSI_REQUIRE_AGENT): run installers/build.sh msi --cross"
        fi
        echo "build.sh: *** WARNING: no Windows build of the agent; this MSI wraps a PLACEHOLDER file, not the agent (installers/build.sh msi --cross builds the real one) ***" >&2
        printf 'PLACEHOLDER: not the Duress agent. A test MSI whose tables are checked in CI.\r\n' \
            >"$stage/PLACEHOLDER-not-the-agent.exe"
        suffix="-TEST-PLACEHOLDER"
    fi
    local exe_source=duress-agent.exe
    [ -n "$suffix" ] && exe_source=PLACEHOLDER-not-the-agent.exe

    # The optional components, as a fragment (no preprocessor conditionals in the main source).
    local extras=() heat=()
    {
        echo '<?xml version="1.0" encoding="utf-8"?>'
        echo '<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi"><Fragment>'
        echo '  <DirectoryRef Id="INSTALLDIR">'
        if [ -n "$loader" ]; then
            cp "$loader" "$stage/WebView2Loader.dll"
            echo '    <Component Id="WebView2LoaderDll" Guid="*" Win64="yes"><File Id="WebView2LoaderDll" Name="WebView2Loader.dll" Source="WebView2Loader.dll" KeyPath="yes"/></Component>'
            extras+=(WebView2LoaderDll)
        fi
        if [ -n "${WEBVIEW2_FIXED_RUNTIME_DIR:-}" ]; then
            [ -d "$WEBVIEW2_FIXED_RUNTIME_DIR" ] || die "WEBVIEW2_FIXED_RUNTIME_DIR is not a directory"
            cp -r "$WEBVIEW2_FIXED_RUNTIME_DIR" "$stage/webview2"
            echo '    <Directory Id="WEBVIEW2DIR" Name="WebView2Runtime"/>'
            echo '    <Component Id="WebView2FixedRuntimePolicy" Guid="*" Win64="yes"><RegistryValue Root="HKLM" Key="SOFTWARE\Policies\Microsoft\Edge\WebView2\BrowserExecutableFolder" Name="duress-agent.exe" Type="string" Value="[WEBVIEW2DIR]" KeyPath="yes"/></Component>'
            extras+=(WebView2FixedRuntimePolicy)
            (cd "$stage" && find webview2 -type f | sort |
                wixl-heat --prefix webview2/ --directory-ref WEBVIEW2DIR \
                    --component-group WebView2FixedRuntime --var var.WebView2Dir --win64 >webview2.wxs)
            heat=(webview2.wxs -D WebView2Dir=webview2 -D Win64=yes)
        fi
        echo '  </DirectoryRef>'
        echo '  <ComponentGroup Id="ExtraComponents">'
        for c in "${extras[@]}"; do echo "    <ComponentRef Id=\"$c\"/>"; done
        [ ${#heat[@]} -gt 0 ] && echo '    <ComponentGroupRef Id="WebView2FixedRuntime"/>'
        echo '  </ComponentGroup>'
        echo '</Fragment></Wix>'
    } >"$stage/extras.wxs"
    cp "$here/windows/duress-agent.wxs" "$stage/"
    # Task Scheduler's own encoding for task files: UTF-16LE with a byte-order mark.
    { printf '\xff\xfe'; iconv -f UTF-8 -t UTF-16LE "$here/windows/duress-agent-task.xml"; } \
        >"$stage/duress-agent-task.xml"

    local msi="$out/duress-agent-$version-x64$suffix.msi"
    rm -f "$msi"
    (cd "$stage" && wixl -a x64 -D "Version=$version" -D "ExeSource=$exe_source" \
        -o "$msi" duress-agent.wxs extras.wxs "${heat[@]}")

    # What wixl ignores or rejects (see installers/windows/duress-agent.wxs).
    local secure
    secure=$(msiinfo export "$msi" Property | awk -F'\t' '$1=="SecureCustomProperties"{print $2}')
    msibuild "$msi" -q "UPDATE \`Property\` SET \`Value\`='${secure:+$secure;}$public_properties' WHERE \`Property\`='SecureCustomProperties'"
    msibuild "$msi" -q "INSERT INTO \`Property\` (\`Property\`, \`Value\`) VALUES ('MsiHiddenProperties', '$hidden_properties')"
    local action type
    for action in SaveCmdLine_ENROLL_TOKEN SetFromCmdLine_ENROLL_TOKEN; do
        type=$(msiinfo export "$msi" CustomAction | awk -F'\t' -v a="$action" '$1==a{print $2}')
        [ -n "$type" ] || die "custom action $action not found"
        # msidbCustomActionTypeHideTarget (0x2000): the token never appears in a verbose log.
        msibuild "$msi" -q "UPDATE \`CustomAction\` SET \`Type\`=$((type | 8192)) WHERE \`Action\`='$action'"
    done
    # An unset property writes no registry value (wixl has no Component/Condition).
    local prop
    for prop in ${public_properties//;/ }; do
        msibuild "$msi" -q "UPDATE \`Component\` SET \`Condition\`='$prop' WHERE \`Component\`='Reg_$prop'"
    done
    # The scheduled task (installers/windows/duress-agent-task.xml): type 34 (an executable run
    # in a directory) + deferred (1024) + no impersonation (2048, as SYSTEM: registering a task
    # for the Users group needs it) = 3106; +64 (return ignored) on removal, so an uninstall
    # never fails because the task was deleted by hand. Sequenced after InstallFiles (4000) and
    # before RemoveFiles (3500).
    local schtasks='"[System64Folder]schtasks.exe"'
    msibuild "$msi" -q "INSERT INTO \`CustomAction\` (\`Action\`, \`Type\`, \`Source\`, \`Target\`) VALUES ('CreateScheduledTask', 3106, 'INSTALLDIR', '$schtasks /Create /F /TN \"Duress\\Agent\" /XML \"[INSTALLDIR]duress-agent-task.xml\"')"
    msibuild "$msi" -q "INSERT INTO \`CustomAction\` (\`Action\`, \`Type\`, \`Source\`, \`Target\`) VALUES ('DeleteScheduledTask', 3170, 'INSTALLDIR', '$schtasks /Delete /F /TN \"Duress\\Agent\"')"
    msibuild "$msi" -q "INSERT INTO \`InstallExecuteSequence\` (\`Action\`, \`Condition\`, \`Sequence\`) VALUES ('DeleteScheduledTask', 'REMOVE~=\"ALL\"', 3490)"
    # Retires the station on uninstall, not on upgrade (a major upgrade removes the old product
    # with UPGRADINGPRODUCTCODE set): `duress-agent decommission`, deferred and impersonated
    # (type 1122 = 34 exe-in-directory + 64 continue on error + 1024 deferred; no
    # noImpersonate), because the device key is in the uninstalling user's Credential Manager,
    # which SYSTEM cannot read. Best-effort: its exit code never fails the uninstall.
    msibuild "$msi" -q "INSERT INTO \`CustomAction\` (\`Action\`, \`Type\`, \`Source\`, \`Target\`) VALUES ('DecommissionStation', 1122, 'INSTALLDIR', '\"[INSTALLDIR]duress-agent.exe\" decommission')"
    msibuild "$msi" -q "INSERT INTO \`InstallExecuteSequence\` (\`Action\`, \`Condition\`, \`Sequence\`) VALUES ('DecommissionStation', 'REMOVE~=\"ALL\" AND NOT UPGRADINGPRODUCTCODE', 3480)"
    msibuild "$msi" -q "INSERT INTO \`InstallExecuteSequence\` (\`Action\`, \`Condition\`, \`Sequence\`) VALUES ('CreateScheduledTask', 'NOT REMOVE~=\"ALL\"', 4010)"
    echo "$msi"
}

# The binary a .deb packs: $ENV_VAR if set, else $CARGO_TARGET_DIR/release/NAME if it exists,
# else the debug one (built by `cargo build -p NAME` unless --no-build).
deb_binary() {
    local name=$1 env_value=$2 env_name=$3 mode=$4
    local bin=$env_value
    if [ -z "$bin" ]; then
        if [ -x "$target_dir/release/$name" ]; then
            bin="$target_dir/release/$name"
        elif [ -x "$target_dir/debug/$name" ]; then
            bin="$target_dir/debug/$name"
        elif [ "$mode" != --no-build ]; then
            (cd "$root" && cargo build -p "$name") >&2
            bin="$target_dir/debug/$name"
        else
            die "no $name binary (cargo build -p $name, or set $env_name)"
        fi
    fi
    [ -x "$bin" ] || die "$bin is not an executable"
    echo "$bin"
}

build_deb() {
    need dpkg-deb dpkg
    mkdir -p "$out"
    local bin
    bin=$(deb_binary duress-agent "${DURESS_AGENT_BIN:-}" DURESS_AGENT_BIN "${1:-}")
    "$here/linux/build-deb.sh" "$bin" "$version" "$out"
}

# deb-receiver: packs $DURESS_RECEIVER_BIN, else the release or debug duress-receiver (as deb).
build_deb_receiver() {
    need dpkg-deb dpkg
    mkdir -p "$out"
    local bin
    bin=$(deb_binary duress-receiver "${DURESS_RECEIVER_BIN:-}" DURESS_RECEIVER_BIN "${1:-}")
    "$here/linux/receiver/build-deb.sh" "$bin" "$version" "$out"
}

pkg_scripts() {
    need shellcheck shellcheck
    local dir="$here/macos"
    shellcheck "$dir/build-pkg.sh" "$dir/scripts/postinstall" "$dir/scripts/preinstall" "$dir/uninstall.sh"
    local dest="$out/macos-pkg-scripts"
    rm -rf "$dest"
    mkdir -p "$dest"
    cp -R "$dir/scripts" "$dir/LaunchAgents" "$dir/uninstall.sh" "$dir/org.duress.agent.mobileconfig" "$dest/"
    echo "$dest"
}

case "${1:-}" in
    msi) shift; build_msi "$@" ;;
    deb) shift; build_deb "$@" ;;
    deb-receiver) shift; build_deb_receiver "$@" ;;
    pkg-scripts) shift; pkg_scripts "$@" ;;
    *) echo "usage: installers/build.sh msi [--placeholder|--cross] | deb [--no-build] | deb-receiver [--no-build] | pkg-scripts" >&2; exit 2 ;;
esac
