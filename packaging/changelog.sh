#!/usr/bin/env bash
# Writes the Debian changelog of a package built from this checkout:
#   packaging/changelog.sh VERSION "Maintainer Name <address>"
# One entry for the version being built, dated by HEAD's commit (so the same
# commit gives the same file); the project's history is git's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 VERSION MAINTAINER" >&2; exit 2; }
version=$1 maintainer=$2
commit=$(git rev-parse HEAD) short=$(git rev-parse --short=12 HEAD)
date=$(git log -1 --format=%cD HEAD)
cat <<ENTRY
calloutd ($version) unstable; urgency=medium

  * Built from git commit $commit.
    The changes are the project's git history:
    https://github.com/calloutd/calloutd/commits/$short

 -- $maintainer  $date
ENTRY
