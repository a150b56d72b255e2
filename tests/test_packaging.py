"""The installable artifacts, built by packaging/ and run for real.

`test_wheel` builds the sdist and the wheel (the wheel from the sdist), checks
what each holds, installs the wheel into a fresh venv and runs its commands
there. `test_deb` builds the .deb, checks its contents, unpacks it and runs a
daemon from the unpacked tree with its venv at its real path, /usr/lib/ifmem
(packaging/in-root.sh: a private mount namespace, so it needs root). Both
fetch build tools and dependencies from PyPI; everything lands in tmp dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
MAN_PAGES = sorted(p.name for p in (ROOT / "man").glob("*.[0-9]"))


def _env(**extra: str) -> dict[str, str]:
    """This process's environment (the test's HOME and XDG dirs), minus anything
    that would let the repository's own code leak into what is being tested."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PYTHON"] = sys.executable  # for the build tools' throwaway venvs
    env.update(extra)
    return env


def _run(
    cmd: Sequence[str | Path],
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in its own process group (all of it is killed on timeout)."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else _env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} took more than {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 0, (
        f"{cmd} exited {done.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    )
    return done


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


@pytest.mark.slow
def test_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([PACKAGING / "build-wheel.sh", dist], timeout=100)
    wheel = _one(dist, "ifmem-*.whl")
    sdist = _one(dist, "ifmem-*.tar.gz")
    assert wheel.name == f"ifmem-{VERSION}-py3-none-any.whl"

    # The wheel: the two packages and their metadata, nothing else.
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"ifmem-{VERSION}.dist-info"
    assert {n.split("/")[0] for n in names} == {"ifmem", "ifmemd", dist_info}
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "ifmem = ifmem.entry:main" in entry_points
    assert "ifmemd = ifmemd.main:main" in entry_points

    # The sdist: what building the wheel and the .deb and running the tests need.
    with tarfile.open(sdist) as tar:
        held = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = {
        "pyproject.toml",
        "README.md",
        "Makefile",
        ".ci/run",
        "systemd/ifmem.service",
        "systemd/ifmem.socket",
        "packaging/build-wheel.sh",
        "packaging/build-deb.sh",
        "packaging/in-root.sh",
        "tests/conftest.py",
        *(f"man/{page}" for page in MAN_PAGES),
    }
    assert needed <= held, f"missing from the sdist: {sorted(needed - held)}"

    # Install the wheel alone into a fresh venv; its dependencies come from this
    # venv's site-packages through a .pth of plain paths (so this venv's own
    # editable ifmem, itself a .pth, is not picked up).
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=60)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "--quiet", "--no-deps", "--no-index", wheel], timeout=60)
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], 30
        ).stdout.strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))

    where = _run([python, "-c", "import ifmem, ifmemd; print(ifmem.__file__, ifmemd.__file__)"], 30)
    for module_file in where.stdout.split():
        assert Path(module_file).is_relative_to(site), where.stdout

    bin_dir = venv / "bin"
    assert _run([bin_dir / "ifmem", "--version"], 30).stdout.strip() == f"ifmem {VERSION}"
    assert _run([bin_dir / "ifmemd", "--version"], 30).stdout.strip() == f"ifmemd {VERSION}"
    verify_help = _run([bin_dir / "ifmem", "audit", "verify", "--help"], 30).stdout
    assert "--checkpoint" in verify_help


# The daemon smoke, run inside the private mount namespace with the unpacked
# package's /usr/bin first on PATH.
_SMOKE = r"""
set -euo pipefail
export PATH="$PKG_ROOT/usr/bin:/usr/bin:/bin"
[ "$(command -v ifmem)" = "$PKG_ROOT/usr/bin/ifmem" ]
ifmem --version
ifmemd --version
/usr/lib/ifmem/bin/python -c 'import ifmem, ifmemd; print(ifmem.__file__, ifmemd.__file__)'

ifmemd 2>"$WORK/ifmemd.err" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 400); do
    ifmem status >/dev/null 2>&1 && break
    sleep 0.05
done
ifmem status --json >"$WORK/status.json"
/usr/lib/ifmem/bin/python - "$WORK/status.json" <<'PY'
import json, sys
status = json.load(open(sys.argv[1]))
for pid in [status["pid"]] + [shard["pid"] for shard in status["shards"]]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        print("argv0", f.read().split(b"\0")[0].decode())
PY
ifmem ask "lighthouse beacon"
ifmem remember "the deploy key rotates monthly"
ifmem stop
wait "$daemon"
echo "daemon exited $?"
ifmem audit verify --checkpoint "$XDG_STATE_HOME/ifmem/checkpoints"
# bash completion as bash-completion would run it, on the first <Tab> after `ifmem audit `.
source "$PKG_ROOT/usr/share/bash-completion/completions/ifmem"
COMP_WORDS=(ifmem audit "")
COMP_CWORD=2
_ifmem_completion ifmem
echo "completion: ${COMPREPLY[*]}"
"""


@pytest.mark.slow
def test_deb(tmp_path: Path) -> None:
    missing = [t for t in ("dpkg-deb", "unshare", "flock") if shutil.which(t) is None]
    why = ""
    if missing:
        why = f"needs {missing}"
    elif os.geteuid() != 0:
        why = "needs root (a mount namespace)"
    elif subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        why = "cannot make a mount namespace here (unshare --mount failed)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the .deb test must run under CI: {why}")
        pytest.skip(why)

    out = tmp_path / "out"
    _run([PACKAGING / "build-deb.sh", out], timeout=150)
    arch = _run(["dpkg", "--print-architecture"], 10).stdout.strip()
    deb = _one(out, "*.deb")
    assert deb.name == f"ifmem_{VERSION}_{arch}.deb"

    # Control fields.
    fields = _run(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"], 10)
    control = dict(line.split(": ", 1) for line in fields.stdout.splitlines())
    assert control["Package"] == "ifmem"
    assert control["Version"] == VERSION
    assert control["Architecture"] == arch
    assert control["Depends"].startswith("python3.")

    # Contents.
    listing = _run(["dpkg-deb", "-c", deb], 30).stdout.splitlines()
    paths = {line.split(None, 5)[5].split(" -> ")[0].removeprefix(".") for line in listing}
    sections = {page: page.rsplit(".", 1)[1] for page in MAN_PAGES}
    expected = {
        "/usr/bin/ifmem",
        "/usr/bin/ifmemd",
        "/usr/lib/ifmem/bin/ifmem",
        "/usr/lib/ifmem/bin/ifmemd",
        "/usr/lib/ifmem/bin/python",
        "/usr/lib/ifmem/pyvenv.cfg",
        "/usr/lib/systemd/user/ifmem.service",
        "/usr/lib/systemd/user/ifmem.socket",
        "/usr/share/bash-completion/completions/ifmem",
        "/usr/share/zsh/vendor-completions/_ifmem",
        "/usr/share/doc/ifmem/copyright",
        *(f"/usr/share/man/man{sec}/{page}.gz" for page, sec in sections.items()),
    }
    assert expected <= paths, f"missing from the .deb: {sorted(expected - paths)}"
    assert all(p == "/" or p.startswith("/usr/") for p in paths), "files outside /usr"
    assert not any("/site-packages/pip/" in p for p in paths), "the venv should carry no pip"
    assert {"ifmem.1", "ifmemd.8"} <= set(MAN_PAGES)

    # Unpack and look at what was generated.
    pkg = tmp_path / "pkg"
    _run(["dpkg-deb", "-x", deb, pkg], 60)
    for unit in ("ifmem.service", "ifmem.socket"):
        shipped = (pkg / "usr/lib/systemd/user" / unit).read_text()
        assert shipped == (ROOT / "systemd" / unit).read_text()
    assert os.readlink(pkg / "usr/bin/ifmem") == "../lib/ifmem/bin/ifmem"
    bash = (pkg / "usr/share/bash-completion/completions/ifmem").read_text()
    assert "_IFMEM_COMPLETE=complete_bash" in bash
    assert "complete -o default -F _ifmem_completion ifmem" in bash
    zsh = (pkg / "usr/share/zsh/vendor-completions/_ifmem").read_text()
    assert zsh.startswith("#compdef ifmem\n")
    assert "_IFMEM_COMPLETE=complete_zsh" in zsh
    assert (pkg / "usr/lib/ifmem/bin/ifmem").read_text().startswith("#!/usr/lib/ifmem/bin/python\n")

    # Run it: a daemon from the unpacked tree on a small corpus, an ask, a stop, a verify.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "beacon.md").write_text(
        "# Beacon\n\nA lighthouse beacon guides ships through the fog.\n"
    )
    config = tmp_path / "ifmem.toml"
    config.write_text(f'[[shard]]\nname = "docs"\npaths = ["{corpus}/*.md"]\n')
    # A short runtime dir: a socket path must fit in 107 bytes.
    runtime = Path(tempfile.mkdtemp(prefix="ifmem-deb-"))
    try:
        env = _env(
            PKG_ROOT=str(pkg),
            WORK=str(tmp_path),
            IFMEM_CONFIG=str(config),
            XDG_RUNTIME_DIR=str(runtime),
        )
        done = subprocess.run(
            [PACKAGING / "in-root.sh", pkg, "bash", "-c", _SMOKE],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            start_new_session=True,
            check=False,
        )
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    err_file = tmp_path / "ifmemd.err"
    daemon_err = err_file.read_text() if err_file.exists() else ""
    report = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n--- ifmemd\n{daemon_err}"
    assert done.returncode == 0, report

    lines = done.stdout.splitlines()
    assert lines[0] == f"ifmem {VERSION}", report
    assert lines[1] == f"ifmemd {VERSION}", report
    assert all(f.startswith("/usr/lib/ifmem/lib/") for f in lines[2].split()), report
    # The one line holding both words of "lighthouse beacon".
    assert "beacon.md:3-3" in done.stdout, report
    assert "remembered as memory:" in done.stdout, report
    assert "daemon exited 0" in done.stdout, report
    assert lines[-2].startswith("ok: "), report
    assert lines[-1] == "completion: verify", report
    # The daemon and every shard ran on the package's interpreter.
    argv0 = [line.split(" ", 1)[1] for line in lines if line.startswith("argv0 ")]
    assert len(argv0) >= 3, report
    assert set(argv0) == {"/usr/lib/ifmem/bin/python"}, report
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["version"] == VERSION
    assert {s["name"] for s in status["shards"]} >= {"docs", "working"}
