"""setup.py's compiler flags and OpenMP probe, without building anything: a probe that
fails is loud, unless FASTBP_OPENMP=0 asked for no OpenMP."""
import importlib.util
import os
import warnings

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
SETUP = os.path.join(ROOT, "setup.py")

pytestmark = pytest.mark.skipif(not os.path.exists(SETUP), reason="no setup.py beside the tests")


@pytest.fixture
def setup_py():
    pytest.importorskip("setuptools")
    spec = importlib.util.spec_from_file_location("fastbp_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # defines the helpers; setup() runs only as __main__
    return module


class FakeCompiler:
    """A distutils compiler whose OpenMP compile fails, or links fine."""

    def __init__(self, compiler_type="unix", cc="gcc", fail=True):
        self.compiler_type, self.compiler_so, self.fail = compiler_type, [cc, "-O2"], fail
        self.calls = []

    def compile(self, sources, output_dir=None, extra_postargs=None):
        self.calls.append(("compile", extra_postargs))
        if self.fail:
            from setuptools._distutils.errors import CompileError
            raise CompileError("omp.h: No such file or directory")
        return [os.path.join(output_dir, "omp_probe.o")]

    def link_executable(self, objects, name, output_dir=None, extra_postargs=None):
        self.calls.append(("link", extra_postargs))


def test_a_failed_openmp_probe_warns_and_builds_single_threaded(setup_py, monkeypatch, capsys):
    monkeypatch.delenv("FASTBP_OPENMP", raising=False)
    with pytest.warns(UserWarning, match="building WITHOUT OpenMP.*-fopenmp.*omp.h"):
        assert setup_py.openmp_flags(FakeCompiler(), "gcc") == ([], [])
    assert "FASTBP_OPENMP=0" in capsys.readouterr().err   # the banner says how to silence it


def test_fastbp_openmp_0_skips_the_probe_quietly(setup_py, monkeypatch):
    monkeypatch.setenv("FASTBP_OPENMP", "0")
    compiler = FakeCompiler()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert setup_py.openmp_flags(compiler, "gcc") == ([], [])
    assert compiler.calls == []


def test_fastbp_openmp_1_makes_a_failed_probe_fatal(setup_py, monkeypatch):
    monkeypatch.setenv("FASTBP_OPENMP", "1")
    with pytest.raises(RuntimeError, match="FASTBP_OPENMP=1 requires OpenMP"):
        setup_py.openmp_flags(FakeCompiler(), "gcc")


@pytest.mark.parametrize("family", ["gcc", "clang", "msvc"])
def test_a_working_probe_gives_the_family_flags(setup_py, monkeypatch, family):
    monkeypatch.delenv("FASTBP_OPENMP", raising=False)
    compiler = FakeCompiler(fail=False)
    flags = setup_py.openmp_flags(compiler, family)
    assert flags == setup_py.OPENMP_ARGS[family]
    assert compiler.calls == [("compile", flags[0]), ("link", flags[1])]


@pytest.mark.parametrize("compiler_type, cc, family", [
    ("unix", "gcc", "gcc"), ("unix", "x86_64-linux-gnu-gcc", "gcc"),
    ("unix", "clang", "clang"), ("unix", "/usr/bin/clang-16", "clang"),
    ("msvc", "cl.exe", "msvc"), ("mingw32", "gcc", "gcc"),
])
def test_compiler_family(setup_py, compiler_type, cc, family):
    assert setup_py.compiler_family(FakeCompiler(compiler_type, cc)) == family


@pytest.mark.parametrize("family", ["gcc", "clang", "msvc"])
def test_flags_keep_the_rounding_rules_and_release_builds_are_stripped(setup_py, family):
    """No fast-math anywhere; gcc and clang never contract to FMA; release builds carry
    no debug info, debug builds keep it."""
    for mode in ("release", "debug"):
        args = setup_py.COMPILE_ARGS[family][mode]
        assert not any("fast" in a for a in args)
        if family != "msvc":
            assert "-ffp-contract=off" in args
        else:
            assert "/fp:precise" in args
    release, debug = (setup_py.COMPILE_ARGS[family][m] + setup_py.LINK_ARGS[family][m]
                      for m in ("release", "debug"))
    if family == "msvc":
        assert "/Zi" not in release and "/Zi" in debug
    else:
        assert "-g0" in release and "-g" in debug
        assert any(a in ("-s", "-Wl,-S,-x") for a in release)
