#!/usr/bin/env bash
# Sets up everything lesioncount needs in ./.venv (idempotent; safe to rerun).
# torch is installed first as the CPU build 2.13.0, so nothing later can pull the CUDA stack.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
fi
.venv/bin/python -c "import torch; assert not torch.version.cuda, 'a CUDA build of torch was installed'"
$PIP install -q -e ".[all]"
# Debian packages for the headless GUI and browser checks (tests skip their part without them).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  command -v Xvfb >/dev/null || missing="$missing xvfb"
  command -v chromium >/dev/null || missing="$missing chromium"
  command -v xvfb-run >/dev/null || missing="$missing xvfb"
  # Qt's xcb platform (a real napari window under Xvfb for the review screenshot)
  for pkg in libegl1 libgl1 libdbus-1-3 libfontconfig1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
             libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 libxcb-shape0 libxcb-xinerama0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null) \
      || echo "setup: could not install$missing (GUI/browser checks will be skipped)" >&2
  fi
fi
echo "lesioncount set up in .venv"
