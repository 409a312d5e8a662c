#!/usr/bin/env bash
# Installs Azurite (the Azure Storage emulator, from the npm registry) into .cache/azurite for the Azure
# Blob store tests. Needs node and npm. Idempotent: does nothing when the pinned version is there.
set -euo pipefail
cd "$(dirname "$0")/.."

version="3.37.0"
dest=".cache/azurite"
installed="$dest/node_modules/azurite/package.json"
if [ -e "$installed" ] && grep -q "\"version\": \"$version\"" "$installed"; then
  echo "azurite: $version already in $dest"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "azurite: npm not found (apt-get install -y nodejs npm)" >&2; exit 1; }
mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --silent "azurite@$version"
echo "azurite: installed $version into $dest"
