"""
The operon-kopf wheel carries the Operon core: ``pip wheel ./sdk-python-compat`` builds it.

Everything about the package is in ``pyproject.toml``; this file adds the one build step that
setuptools cannot declare: the core binary (``operon``, Rust) is built with cargo and put into the
package as ``kopf/_bin/operon``, where ``kopf run`` finds it. The wheel is then a platform wheel,
tagged for what the binary really needs:

- with Rust's musl target and ``musl-gcc`` present (``rustup target add x86_64-unknown-linux-musl``,
  Debian's ``musl-tools``), the core is a static executable — no dynamic loader, no shared library —
  and runs on any Linux of that architecture: the wheel is tagged both ``manylinux_2_17`` and
  ``musllinux_1_1``. The build checks the ELF file and refuses the tag if it is not static.
- without them, the core is built for this machine and the wheel is tagged ``linux_<arch>``: it
  installs here, and a package index would (rightly) refuse it.

The core's sources come from the repository (``../Cargo.toml``: a checkout) or, in a source
distribution, from ``core-src/`` (copied there by ``sdist``). Without cargo, the build stops and
says what is missing. Editable installs (``pip install -e``) build no core: there, ``kopf run``
uses ``$OPERON_BIN`` or ``operon`` from ``$PATH``, as in the repository's tests.
"""
import json
import os
import pathlib
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = 'operon'  # the cargo package (and binary) of the core
BUNDLED = pathlib.Path('kopf', '_bin', 'operon')  # where it lands in the wheel (and site-packages)
SDIST_CORE = 'core-src'
# What the core needs from the workspace (the sdist's reduced workspace has only these members).
CORE_CRATES = ('proto', 'operator/core', 'operator', 'dashboard')


class CoreBuildError(RuntimeError):
    """ The core cannot be built here; the message says what is missing. """


def _workspace() -> tuple[pathlib.Path, bool]:
    """ The cargo workspace to build from, and whether its lock file is to be kept exactly. """
    if (HERE / SDIST_CORE / 'Cargo.toml').is_file():
        # The sdist's workspace has fewer members, so cargo drops their entries from the lock
        # (the versions of everything the core uses stay as locked).
        return HERE / SDIST_CORE, False
    if (HERE.parent / 'Cargo.toml').is_file() and (HERE.parent / 'operator').is_dir():
        return HERE.parent, True
    raise CoreBuildError(
        "The Operon core's sources are not here: build the wheel from a checkout of the "
        "repository (sdk-python-compat/ next to Cargo.toml) or from the source distribution.")


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise CoreBuildError(f"Building operon-kopf from source builds the Operon core, which needs "
                             f"{name!r}; it is not on $PATH. {hint}")
    return found


def _static_target(rustc: str) -> str | None:
    """ Rust's musl target for this machine, if it and a C compiler for it are installed. """
    triple = f"{platform.machine()}-unknown-linux-musl"
    if not sys.platform.startswith('linux') or not shutil.which('musl-gcc'):
        return None
    libdir = subprocess.run([rustc, '--print', 'target-libdir', '--target', triple],
                            capture_output=True, text=True, check=False)
    if libdir.returncode != 0 or not pathlib.Path(libdir.stdout.strip()).is_dir():
        return None
    return triple


def _is_static(path: pathlib.Path) -> bool:
    """ True for an ELF executable with no program interpreter (no dynamic loader, no libc). """
    data = path.read_bytes()
    if data[:4] != b'\x7fELF' or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return False
    phoff, = struct.unpack_from('<Q', data, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', data, 0x36)
    types = [struct.unpack_from('<I', data, phoff + i * phentsize)[0] for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def _platform_tag(static: bool) -> str:
    arch = platform.machine()
    if static:
        return f"manylinux_2_17_{arch}.manylinux2014_{arch}.musllinux_1_1_{arch}"
    return sysconfig.get_platform().replace('-', '_').replace('.', '_')


def build_core() -> tuple[pathlib.Path, str]:
    """ Build the core with cargo (release); its path, and the wheel's platform tag. """
    root, locked = _workspace()
    cargo = _tool('cargo', "Install Rust (https://rustup.rs), or install a prebuilt operon-kopf wheel.")
    rustc = _tool('rustc', "Install Rust (https://rustup.rs), or install a prebuilt operon-kopf wheel.")
    target = _static_target(rustc)
    if target is None:
        print("operon-kopf: Rust's musl target or musl-gcc is missing, so the core is built for this "
              "machine only (a linux_* wheel). For a portable wheel: rustup target add "
              f"{platform.machine()}-unknown-linux-musl, and install musl-gcc (Debian: musl-tools).",
              file=sys.stderr)
    command = [cargo, 'build', '--release', '-p', PACKAGE, '--bin', PACKAGE,
               '--manifest-path', str(root / 'Cargo.toml'), '--message-format=json-render-diagnostics']
    command += ['--locked'] if locked else []
    command += ['--target', target] if target else []
    print(f"operon-kopf: building the Operon core: {' '.join(command)}", file=sys.stderr, flush=True)
    # Cargo's progress and diagnostics go to stderr (the user's terminal); artifacts come as JSON.
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, cwd=root)
    if done.returncode != 0:
        raise CoreBuildError(f"Building the Operon core failed (cargo exited with {done.returncode}); "
                             f"cargo's messages are above.")
    binary = None
    for line in done.stdout.splitlines():
        message = json.loads(line) if line.startswith('{') else {}
        if message.get('reason') == 'compiler-artifact' and message.get('executable') \
                and message['target']['name'] == PACKAGE:
            binary = pathlib.Path(message['executable'])
    if binary is None or not binary.is_file():
        raise CoreBuildError("cargo finished but named no 'operon' executable.")
    static = target is not None
    if static and not _is_static(binary):
        raise CoreBuildError(f"{binary} was built for {target} but is not a static executable: "
                             f"the wheel cannot be tagged manylinux/musllinux.")
    return binary, _platform_tag(static)


class BuildPyWithCore(build_py):
    """ Builds the Python package and puts the core into it (not in editable installs). """

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        try:
            binary, tag = build_core()
        except CoreBuildError as error:
            raise SystemExit(f"error: {error}") from None
        self.distribution.operon_platform_tag = tag
        destination = pathlib.Path(self.build_lib) / BUNDLED
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(binary, destination)
        destination.chmod(destination.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class PlatformWheel(bdist_wheel):
    """ A platform wheel (it holds a native executable) for any Python 3 (it has no extension). """

    def get_tag(self) -> tuple[str, str, str]:
        tag = getattr(self.distribution, 'operon_platform_tag', None)
        # No core was built: an editable install's wheel, which holds only a path to the sources
        # (a failed core build has stopped the build before this point).
        return 'py3', 'none', tag or 'any'


class WithCore(Distribution):
    """ The package holds a native binary: installed to platlib, at the wheel's root. """

    def has_ext_modules(self) -> bool:
        return True


class SdistWithCore(sdist):
    """ The source distribution carries the core's sources (a reduced cargo workspace). """

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root, _ = _workspace()
        into = pathlib.Path(base_dir) / SDIST_CORE
        for crate in CORE_CRATES:
            # proto/examples/ holds other members' handler services: not the core's.
            skip = ('target', '__pycache__', '*.pyc') + (('examples',) if crate == 'proto' else ())
            shutil.copytree(root / crate, into / crate, ignore=shutil.ignore_patterns(*skip),
                            dirs_exist_ok=True)
        shutil.copyfile(root / 'Cargo.lock', into / 'Cargo.lock')
        manifest = (root / 'Cargo.toml').read_text()
        members = 'members = [' + ', '.join(f'"{crate}"' for crate in CORE_CRATES) + ']'
        manifest, replaced = re.subn(r'(?m)^members = \[.*\]$', members, manifest)
        if replaced != 1:
            raise SystemExit("error: the workspace's members line was not found in Cargo.toml.")
        (into / 'Cargo.toml').write_text(manifest)


setup(distclass=WithCore, cmdclass={'build_py': BuildPyWithCore, 'bdist_wheel': PlatformWheel, 'sdist': SdistWithCore})
