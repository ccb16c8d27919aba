#!/usr/bin/env bash
# Installs what worldloom/Minetest-v0 needs when it is missing (make test runs this): Debian's
# minetest (the engine, 5.6), minetest-data (minetest_game), Xvfb (one X display per instance),
# llvmpipe (libgl1-mesa-dri) and gcc (builds the lock-step shim). python-xlib comes from pyproject.toml.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/games/$1" ]; }
if have minetest && have Xvfb && have gcc && [ -f /usr/share/games/minetest/games/minetest_game/game.conf ]; then
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  minetest minetest-data xvfb libgl1-mesa-dri gcc libc6-dev >/dev/null
