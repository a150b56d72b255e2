#!/usr/bin/env bash
# Run a command with ROOT/usr/lib/ifmem mounted at /usr/lib/ifmem.
#
#   packaging/in-root.sh ROOT COMMAND [ARG...]
#
# A venv only works at the path it was created at (its scripts' #! lines and
# pyvenv.cfg name it), so the .deb's venv is built, and tested, at its real
# path /usr/lib/ifmem: in a private mount namespace (unshare -m) where a staging
# directory is bind-mounted there. Nothing outside the namespace sees the mount.
# Needs root (CAP_SYS_ADMIN) and util-linux's unshare and flock.
#
# A bind mount needs a mount point: if /usr/lib/ifmem does not exist it is
# created (empty) for the duration and removed afterwards. A lock serialises
# runs, so one run cannot remove the mount point from under another.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: in-root.sh ROOT COMMAND [ARG...]" >&2
    exit 2
fi
root=$(cd "$1" && pwd)
shift
target=/usr/lib/ifmem
source_dir=$root$target

if [ "$(id -u)" != 0 ]; then
    echo "in-root.sh: needs root (a private mount namespace and a bind mount)" >&2
    exit 77
fi
if [ ! -d "$source_dir" ]; then
    echo "in-root.sh: $source_dir is not a directory" >&2
    exit 2
fi

# A fixed path, whatever $TMPDIR says, so every run sees the same lock.
lockdir=/run/lock
[ -d "$lockdir" ] || lockdir=/tmp
exec 9>"$lockdir/ifmem-in-root.lock"
flock 9

created=
if [ ! -e "$target" ]; then
    mkdir "$target"
    created=1
fi
cleanup() {
    if [ -n "$created" ]; then
        rmdir "$target" 2>/dev/null || true
    fi
}
trap cleanup EXIT

status=0
# The lock's descriptor is not needed inside; close it so no daemon started
# there keeps the lock after this script is done.
unshare --mount --propagation private -- \
    sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' in-root \
    "$source_dir" "$target" "$@" 9>&- || status=$?
exit "$status"
