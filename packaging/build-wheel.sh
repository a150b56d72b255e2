#!/usr/bin/env bash
# Build the sdist and the wheel of ifmem into OUTDIR (default: dist/).
#
#   packaging/build-wheel.sh [OUTDIR] [--wheel|--sdist]
#
# `python -m build` runs in a throwaway venv (made from $PYTHON, default python3)
# that is deleted on exit ($IFMEM_TOOLS_VENV names one to create or reuse and
# keep instead); the project's .venv is never touched. With no flag,
# the wheel is built *from the sdist*, which proves the sdist holds what a build
# needs. Afterwards the wheel is checked to hold only the ifmem and ifmemd
# packages and their metadata.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
outdir=$repo/dist
build_args=()
for arg in "$@"; do
    case $arg in
        --wheel | --sdist) build_args+=("$arg") ;;
        -h | --help)
            sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*) echo "build-wheel.sh: unknown option $arg" >&2; exit 2 ;;
        *) outdir=$arg ;;
    esac
done
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

python=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

tools=$(mktemp -d "${TMPDIR:-/tmp}/ifmem-build-wheel.XXXXXX")
trap 'rm -rf "$tools"' EXIT
venv=${IFMEM_TOOLS_VENV:-$tools/venv}
[ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "build>=1.2"

# A fresh output directory per run, so the check below sees only this build.
"$venv/bin/python" -m build --outdir "$tools/out" "${build_args[@]}" "$repo" >"$tools/build.log" 2>&1 || {
    cat "$tools/build.log" >&2
    exit 1
}

"$venv/bin/python" - "$tools/out" "$repo" <<'PY'
import sys
import tarfile
import zipfile
from pathlib import Path

out, repo = Path(sys.argv[1]), Path(sys.argv[2])
for whl in out.glob("*.whl"):
    names = zipfile.ZipFile(whl).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    stray = [n for n in names if n.split("/")[0] not in {"ifmem", "ifmemd", dist_info}]
    if stray:
        sys.exit(f"{whl.name}: files outside ifmem/, ifmemd/ and {dist_info}/: {stray[:10]}")
    for need in ("ifmem/__init__.py", "ifmemd/__init__.py", f"{dist_info}/entry_points.txt"):
        if need not in names:
            sys.exit(f"{whl.name}: {need} is missing")
for sdist in out.glob("*.tar.gz"):
    with tarfile.open(sdist) as tar:
        held = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    # What the .deb is made from must travel with the sources.
    need = {"pyproject.toml", "README.md", "daemon/ifmemd/__init__.py", "cli/ifmem/__init__.py"}
    for d in ("man", "systemd", "packaging"):
        need |= {
            str(f.relative_to(repo))
            for f in (repo / d).iterdir()
            if f.is_file() and not f.name.startswith(".")
        }
    missing = need - held
    if missing:
        sys.exit(f"{sdist.name}: missing {sorted(missing)}")
PY

for f in "$tools/out"/*; do
    mv -f "$f" "$outdir/"
    echo "$outdir/$(basename "$f")"
done
