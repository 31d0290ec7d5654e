#!/usr/bin/env bash
# Makes sure the system tools the tests drive are on the machine: setfattr/getfattr (Debian's
# `attr`) and setfacl/getfacl (`acl`), which the xattr and ACL tests use to plant and read what
# shmpipe must back up and restore. They come from Debian's package registry, and only when this
# runs as root with apt-get; otherwise the tests that need them skip with a message naming the
# package. Idempotent: does nothing when the tools are there.
set -euo pipefail
missing=()
command -v setfattr >/dev/null || missing+=(attr)
command -v setfacl >/dev/null || missing+=(acl)
if ((${#missing[@]} == 0)); then
  echo "install-test-tools: attr and acl are installed"
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "install-test-tools: installing ${missing[*]} from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
    echo "install-test-tools: could not install ${missing[*]}; the xattr/ACL tests will skip"
else
  echo "install-test-tools: ${missing[*]} missing and not root; the xattr/ACL tests will skip (install: apt-get install ${missing[*]})"
fi
