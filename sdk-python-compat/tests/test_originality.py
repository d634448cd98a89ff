"""No module of ours is a copy or a close paraphrase of Kopf's own source.

Every ``.py`` file under ``src/kopf`` (the generated ``_proto`` stubs aside) is compared with every
``.py`` file of Kopf's source distribution. Blank lines and import lines are ignored; the rest are
stripped of indentation and matched in sequence with :class:`difflib.SequenceMatcher`. A file fails
when more than :data:`LIMIT` of its lines belong to blocks matching one Kopf file.

Kopf's source is looked for in ``$KOPF_SOURCE``, ``/tmp/kopfsrc``, an importable ``kopf`` that is
not this package, or downloaded with ``pip download kopf==1.45.2 --no-binary :all:``; the test is
skipped when none of those is available (no network, no copy).
"""
from __future__ import annotations

import difflib
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

import pytest

LIMIT = 0.25
OURS = pathlib.Path(__file__).resolve().parent.parent / 'src' / 'kopf'


def _significant(path: pathlib.Path) -> list[str]:
    out = []
    for raw in path.read_text(encoding='utf-8', errors='replace').splitlines():
        line = raw.strip()
        if not line or line.startswith(('import ', 'from ')):
            continue
        out.append(line)
    return out


def _kopf_tree_candidates() -> list[pathlib.Path]:
    roots = []
    if os.environ.get('KOPF_SOURCE'):
        roots.append(pathlib.Path(os.environ['KOPF_SOURCE']))
    roots.append(pathlib.Path('/tmp/kopfsrc'))
    return roots


def _find_kopf_package(root: pathlib.Path) -> pathlib.Path | None:
    if not root.is_dir():
        return None
    for init in sorted(root.rglob('kopf/__init__.py')):
        if (init.parent / 'on.py').exists() and OURS not in init.parents:
            return init.parent
    return None


def _download(into: pathlib.Path) -> pathlib.Path | None:
    try:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
                        '--no-binary', ':all:', '-d', str(into), 'kopf==1.45.2'],
                       check=True, timeout=120, capture_output=True)
    except (subprocess.SubprocessError, OSError):
        return None
    for archive in into.glob('kopf-*.tar.gz'):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter='data')
    return _find_kopf_package(into)


@pytest.fixture(scope='module')
def kopf_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    pkg = None
    for root in _kopf_tree_candidates():
        pkg = pkg or _find_kopf_package(root)
    if pkg is None and os.environ.get('OPERON_NO_NETWORK') is None:
        pkg = _download(pathlib.Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())))
    if pkg is None:
        pytest.skip("Kopf's source is not available (no /tmp/kopfsrc, $KOPF_SOURCE, or network)")
    return {str(p.relative_to(pkg)): _significant(p) for p in pkg.rglob('*.py')}


def _ours() -> list[pathlib.Path]:
    return sorted(p for p in OURS.rglob('*.py') if '_proto' not in p.relative_to(OURS).parts)


def similarity(mine: list[str], theirs: list[str]) -> float:
    """The share of ``mine``'s lines that lie in blocks matching ``theirs`` in sequence."""
    if not mine:
        return 0.0
    matcher = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(mine)


def worst_match(path: pathlib.Path, sources: dict[str, list[str]]) -> tuple[float, str]:
    mine = _significant(path)
    scores = [(similarity(mine, theirs), name) for name, theirs in sources.items()]
    return max(scores, default=(0.0, ''))


@pytest.mark.parametrize('path', _ours(), ids=lambda p: str(p.relative_to(OURS)))
def test_module_is_not_a_copy_of_kopf(path: pathlib.Path, kopf_sources: dict[str, list[str]]) -> None:
    score, name = worst_match(path, kopf_sources)
    assert score <= LIMIT, f"{path.name}: {score:.0%} of its lines match Kopf's {name} in sequence"


def test_no_kopf_license_notices() -> None:
    root = OURS.parent.parent
    assert not (root / 'LICENSE-KOPF').exists()
    for path in _ours():
        text = path.read_text(encoding='utf-8')
        assert 'Vasilyev' not in text and 'Zalando SE' not in text, path
