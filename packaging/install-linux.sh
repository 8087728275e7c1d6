#!/usr/bin/env bash
# Install Mneme's desktop integration for the current user: menu entry, icons, AppStream metadata
# and (with --autostart) a login item.  --uninstall removes all of it; the memory itself (your
# data folder) is never touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
APP_ID=io.github.mneme.Mneme
data="${XDG_DATA_HOME:-$HOME/.local/share}"
config="${XDG_CONFIG_HOME:-$HOME/.config}"
bindir="$HOME/.local/bin"
autostart=0
uninstall=0
for arg in "$@"; do
  case "$arg" in
    --autostart) autostart=1 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) echo "usage: $0 [--autostart] [--uninstall]"; exit 0 ;;
    *) echo "install-linux: unknown option $arg (use --autostart or --uninstall)" >&2; exit 2 ;;
  esac
done
files=("$data/applications/$APP_ID.desktop" "$data/metainfo/$APP_ID.metainfo.xml"
       "$data/icons/hicolor/scalable/apps/$APP_ID.svg" "$config/autostart/$APP_ID.desktop"
       "$bindir/mneme" "$bindir/mneme-app")
for size in 16 32 48 64 128 256 512; do files+=("$data/icons/hicolor/${size}x${size}/apps/$APP_ID.png"); done

if [ "$uninstall" = 1 ]; then
  for f in "${files[@]}"; do
    if [ -L "$f" ] || [ -f "$f" ]; then rm -f "$f"; echo "removed $f"; fi
  done
  command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
  echo "Mneme's desktop integration is gone. Your memory was left as it is."
  exit 0
fi

exe="$(command -v mneme-app || true)"
[ -n "$exe" ] || exe="$root/.venv/bin/mneme-app"
if [ ! -x "$exe" ]; then
  echo "install-linux: mneme-app not found; run 'make run' (or pip install .) first" >&2
  exit 1
fi
mkdir -p "$data/applications" "$data/metainfo" "$data/icons/hicolor/scalable/apps" "$bindir"
sed "s|^Exec=mneme-app|Exec=$exe|" "$here/linux/$APP_ID.desktop" > "$data/applications/$APP_ID.desktop"
cp "$here/linux/$APP_ID.metainfo.xml" "$data/metainfo/"
cp "$here/linux/icons/mneme.svg" "$data/icons/hicolor/scalable/apps/$APP_ID.svg"
for size in 16 32 48 64 128 256 512; do
  mkdir -p "$data/icons/hicolor/${size}x${size}/apps"
  cp "$here/linux/icons/mneme-$size.png" "$data/icons/hicolor/${size}x${size}/apps/$APP_ID.png"
done
ln -sf "$exe" "$bindir/mneme-app"
ln -sf "$(dirname "$exe")/mneme" "$bindir/mneme"
if [ "$autostart" = 1 ]; then
  mkdir -p "$config/autostart"
  cp "$data/applications/$APP_ID.desktop" "$config/autostart/$APP_ID.desktop"
fi
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
echo "Installed Mneme for $(id -un): menu entry, icons$([ "$autostart" = 1 ] && echo ", autostart")."
