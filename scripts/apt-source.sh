#!/usr/bin/env bash
# Prints the archive URI this machine's apt takes packages from, so that no mirror host is
# written in the repository: the build scripts debootstrap from the same source apt uses.
#   apt-source.sh [main|security]   (default main)
# Reads deb822 files (/etc/apt/sources.list.d/*.sources) first, then one-line lists
# (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list). A stanza or line whose suite ends
# in -security is the security archive; any other "deb" source is the main archive.
# Exits 1, saying so on stderr, when the machine has no such source. APT_ETC (default
# /etc/apt) is where the lists are read from (tests point it elsewhere).
set -euo pipefail
want=${1:-main}
case $want in main|security) ;; *) echo "usage: $0 [main|security]" >&2; exit 64 ;; esac

from_deb822() {
  awk -v want="$want" '
    function flush() {
      if (types ~ /(^|[ \t])deb([ \t]|$)/ && uris != "" && enabled != "no") {
        sec = (suites ~ /-security/)
        if ((want == "security") == sec) { split(uris, u, /[ \t]+/); print u[1]; found = 1; exit }
      }
      types = uris = suites = enabled = ""
    }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    { line = $0; key = tolower(line); sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val) }
    key == "types" { types = val } key == "uris" { uris = val } key == "suites" { suites = val }
    key == "enabled" { enabled = tolower(val) }
    END { if (!found) flush() }
  ' "$@"
}

from_list() {
  awk -v want="$want" '
    /^[ \t]*deb[ \t]/ {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      uri = $i; suite = $(i + 1)
      sec = (suite ~ /-security/)
      if ((want == "security") == sec) { print uri; exit }
    }' "$@"
}

shopt -s nullglob
etc=${APT_ETC:-/etc/apt}
uri=""
sources=("$etc"/sources.list.d/*.sources)
[ ${#sources[@]} -gt 0 ] && uri=$(from_deb822 "${sources[@]}" | head -n1)
if [ -z "$uri" ]; then
  lists=("$etc"/sources.list "$etc"/sources.list.d/*.list)
  existing=()
  for f in "${lists[@]}"; do [ -f "$f" ] && existing+=("$f"); done
  [ ${#existing[@]} -gt 0 ] && uri=$(from_list "${existing[@]}" | head -n1)
fi
if [ -z "$uri" ]; then
  echo "apt-source: this machine's apt has no $want archive (checked $etc/sources.list.d/*.sources and sources.list)" >&2
  exit 1
fi
echo "${uri%/}"
