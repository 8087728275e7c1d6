#!/usr/bin/env bash
# Install the Debian/Ubuntu packages Mneme needs (OCR, a virtual X server for tests, Qt's xcb libs).
# As root with apt-get it installs what is missing; otherwise it prints the exact command.
set -euo pipefail
PACKAGES=(tesseract-ocr tesseract-ocr-eng xvfb xdotool x11-utils xterm
          libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1
          libxkbcommon-x11-0 libxcb-cursor0 libegl1 libgl1 libfontconfig1 libdbus-1-3
          openbox x11-xserver-utils fonts-dejavu-core fonts-noto-color-emoji dbus-x11 gnome-keyring
          desktop-file-utils appstream)
command -v dpkg-query >/dev/null || { echo "system-deps: not a Debian/Ubuntu system; install tesseract and Xvfb yourself" >&2; exit 0; }
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "system-deps: missing Debian packages. Run:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
fi
