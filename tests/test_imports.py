"""Heavy imports are lazy: ``import featlab`` and ``featlab --help`` load neither torch nor faiss.

Each check runs in a fresh interpreter, since this test process has long imported both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "faiss", "timm", "torchvision")


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON object last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_featlab_is_light() -> None:
    out = run_python(
        f"""
        import json, sys
        import featlab
        version = featlab.__version__
        after_import = sorted(m for m in {HEAVY!r} if m in sys.modules)
        open_store = featlab.open_store
        from featlab.store import open_store as direct
        names = sorted(dir(featlab))
        print(json.dumps({{
            "version": version,
            "after_import": after_import,
            "after_open_store": sorted(m for m in {HEAVY!r} if m in sys.modules),
            "same": open_store is direct,
            "store_loaded": "featlab.store" in sys.modules,
            "has_dir": "open_store" in names and "run_probe" in names,
        }}))
        """
    )
    from featlab._version import __version__

    assert out["version"] == __version__
    assert out["after_import"] == []
    assert out["after_open_store"] == []
    assert out["same"] is True
    assert out["store_loaded"] is True
    assert out["has_dir"] is True


def test_featlab_import_does_not_load_store_eagerly() -> None:
    out = run_python(
        """
        import json, sys
        import featlab
        loaded = [m for m in ("featlab.store", "zarr", "xarray") if m in sys.modules]
        print(json.dumps(loaded))
        """
    )
    assert out == []


def test_cli_help_is_light() -> None:
    out = run_python(
        f"""
        import json, sys, io, contextlib
        from featlab.cli.main import COMMANDS, cli
        codes = {{}}
        for args in [["--help"]] + [[name, "--help"] for name in sorted(COMMANDS)]:
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    cli(args)
            except SystemExit as exc:
                codes[" ".join(args)] = (exc.code, "Usage" in buf.getvalue())
        print(json.dumps({{
            "codes": codes,
            "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules),
        }}))
        """
    )
    assert out["heavy"] == []
    assert out["codes"]["--help"] == [0, True]
    assert all(v == [0, True] for v in out["codes"].values()), out["codes"]
    from featlab.cli.main import COMMANDS

    assert len(out["codes"]) == 1 + len(COMMANDS)


def test_lazy_attributes_resolve_and_unknown_raises() -> None:
    import featlab

    for name in featlab.__all__:
        assert getattr(featlab, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        featlab.nope  # noqa: B018
