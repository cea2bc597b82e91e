#!/usr/bin/env bash
# Writes /usr/share/doc/calloutd/copyright (Debian machine-readable format,
# https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/) to
# standard output: calloutd's own LICENSE, then every Go module linked into
# cmd/calloutd and the Go standard library, each with its own licence text
# (calloutd is one static binary, so their code ships in the package too).
# CGO_ENABLED=0 as in "make deb", so the list is that of the binary built.
# A module whose licence this script cannot recognise fails the build: add
# its case below rather than ship a wrong copyright file.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

# indent prints a licence text as a copyright-format continuation: one space
# before each line, "." for empty lines, trailing blanks removed.
indent() {
  sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$1" |
    sed -e :a -e '/^ \.$/{$d;N;ba' -e '}' # no trailing "." lines
}

# licence_file finds a module's licence text.
licence_file() {
  local f
  for f in LICENSE LICENSE.txt LICENSE.md LICENCE COPYING; do
    [ -f "$1/$f" ] && { echo "$1/$f"; return 0; }
  done
  return 1
}

# licence_name gives the SPDX-like short name Debian uses for a text.
licence_name() {
  if grep -q 'Apache License' "$1" && grep -q 'Version 2.0' "$1"; then
    echo Apache-2.0
  elif grep -q 'Permission is hereby granted, free of charge' "$1"; then
    echo Expat
  elif grep -q 'Mozilla Public License' "$1" && grep -q 'Version 2.0' "$1"; then
    echo MPL-2.0
  elif grep -q 'Redistribution and use in source and binary forms' "$1"; then
    if grep -qi 'neither the name\|names of its contributors\|name of the copyright holder' "$1"; then
      echo BSD-3-clause
    else
      echo BSD-2-clause
    fi
  else
    return 1
  fi
}

# holders prints the Copyright: field of a licence text, or of NOTICE.
holders() {
  local dir=$1 text=$2 module=$3 lines
  lines=$(grep -h -i '^[[:space:]]*copyright (c)\|^[[:space:]]*copyright [0-9]' "$text" "$dir/NOTICE" 2>/dev/null |
    sed -e 's/^[[:space:]]*//' -e 's/^[Cc]opyright *([Cc]) *//' -e 's/^[Cc]opyright *//' | sort -u || true)
  if [ -z "$lines" ]; then
    lines="the $module authors"
  fi
  printf '%s\n' "$lines" | sed -e '1s/^/Copyright: /' -e '2,$s/^/ /'
}

# stanza prints one Files paragraph with its licence text.
stanza() { # files-pattern dir name
  local files=$1 dir=$2 module=$3 text name
  if ! text=$(licence_file "$dir"); then
    echo "packaging/copyright.sh: no licence file in $dir ($module)" >&2
    exit 1
  fi
  if ! name=$(licence_name "$text"); then
    echo "packaging/copyright.sh: unrecognised licence $text ($module); add it to licence_name" >&2
    exit 1
  fi
  echo
  echo "Files: $files"
  holders "$dir" "$text" "$module"
  echo "License: $name"
  if [ "$name" = Apache-2.0 ]; then
    # Debian's copy; lintian asks for the reference, not the full text.
    echo " On Debian systems, the complete text of the Apache License, Version 2.0"
    echo " can be found in /usr/share/common-licenses/Apache-2.0."
  else
    indent "$text"
  fi
  if [ "$module" != calloutd ]; then
    echo "Comment: $module"
    if [ -f "$dir/NOTICE" ]; then
      echo " Its NOTICE file:"
      echo " ."
      indent "$dir/NOTICE"
    fi
  fi
}

cat <<'HEADER'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: calloutd
Upstream-Contact: https://github.com/calloutd/calloutd/issues
Source: https://github.com/calloutd/calloutd
Comment: /usr/sbin/calloutd is statically linked: besides calloutd's own
 code it contains the Go standard library and the Go modules listed below
 (path and version, as in go.mod), each under its own licence.
HEADER

stanza '*' . calloutd

goroot=$($GO env GOROOT)
stanza 'go-stdlib/*' "$goroot" "Go $($GO env GOVERSION)"

CGO_ENABLED=0 $GO list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/calloutd |
  sort -u |
  while read -r path version dir; do
    [ -n "$dir" ] || { echo "packaging/copyright.sh: $path has no source directory (go mod download)" >&2; exit 1; }
    stanza "go-modules/$path/*" "$dir" "$path $version"
  done
