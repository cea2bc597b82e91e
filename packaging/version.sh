#!/usr/bin/env bash
# Prints the Debian package version of the working tree, from git:
#   tag v1.2.3 on HEAD              -> 1.2.3
#   tag v1.2.3-rc1 on HEAD          -> 1.2.3~rc1            (sorts before 1.2.3)
#   4 commits after v1.2.3          -> 1.2.3+git20261202.153012.abc1234
#   no tag at all                   -> 0.0.0~git20261202.153012.abc1234
#   uncommitted changes             -> any of the above, then +dirty
# The date and time are HEAD's commit time (UTC), so snapshots of one branch
# sort in commit order and a rebuild of the same commit gets the same version.
# The version never contains "-": the package is native (no Debian revision).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
  echo "packaging/version.sh: not a git checkout with commits; set DEB_VERSION" >&2
  exit 1
fi

hash=$(git rev-parse --short=7 HEAD)
stamp=$(TZ=UTC0 git log -1 --format=%cd --date=format-local:%Y%m%d.%H%M%S HEAD)

# Release tags look like v1.2.3 or v1.2.3-rc1.
if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
  base=${tag#v}
  base=${base//-/\~}   # v1.2.3-rc1 -> 1.2.3~rc1
  if [ "$(git rev-list --count "$tag"..HEAD)" -eq 0 ]; then
    version=$base
  else
    version="$base+git$stamp.$hash"
  fi
else
  version="0.0.0~git$stamp.$hash"
fi

# Untracked files count too (build output is in .gitignore).
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  version="$version+dirty"
fi

if ! [[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
  echo "packaging/version.sh: \"$version\" (from tag ${tag:-none}) is not a valid native Debian version" >&2
  exit 1
fi
echo "$version"
