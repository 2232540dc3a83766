#!/usr/bin/env python
"""Check what fastbp publishes: build the sdist, build the wheel from it, look inside
both, install the wheel into a throwaway folder and run part of the test suite from the
unpacked sdist against that installed copy.

    python tools/check_dist.py            # needs `build` (pip install build); ~1 min
    python tools/check_dist.py --keep     # keep the temporary folder and say where

Checks:
- the sdist carries LICENSE, the sources the wheel is built from (.pyx, _loops.h, the
  generated .c), tests/ with its helpers, docs/, benchmarks/ and tools/, and every
  relative link of the README resolves inside it;
- the wheel carries LICENSE and the type stub, and none of the C or Cython sources;
  on Linux its extension is stripped (no symbol table, no debug info);
- from the unpacked sdist, with the installed wheel on the path (not src/), the whole
  suite collects and a part of it passes.

Run by .ci/run as a step of its own: it builds fastbp twice, which the test suite that
developers run should not pay for.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests run from the sdist: the layers and both backends, and the benchmark command and
# lab (it reads docs/, tools/ and benchmarks/, so their presence is tested too). Kept small: the
# two builds before it take most of this script's minute or two.
SUBSET = ["tests/test_backends.py", "tests/test_layers.py", "tests/test_bench_smoke.py"]

SDIST_MUST_HAVE = [
    "LICENSE", "README.md", "pyproject.toml", "setup.py",
    "src/fastbp/kernels/_cython.pyx", "src/fastbp/kernels/_loops.h",
    "src/fastbp/kernels/_cython.c", "src/fastbp/kernels/_cython.pyi",
    "src/fastbp/kernels/_gemm.pyx", "src/fastbp/kernels/_gemm.c",
    "tests/conftest.py", "tests/_mnist.py", "tests/_fuzz_worker.py",
    "tests/mpi_scripts/problem.py", "tests/_book_reference.py",
    "tests/book_reference/common/_idiom.py", "docs/benchmarks.md", "benchmarks/conftest.py",
    "benchmarks/README.md", "benchmarks/compare.py", "benchmarks/peers.py",
    "benchmarks/limits.py", "benchmarks/busy.py", "tools/plot_bench.py", "tools/profile_step.py",
]


class Failed(Exception):
    pass


def run(cmd, quiet=False, **kw):
    """Run ``cmd``; ``quiet``: its output is shown only when it fails."""
    print("+", " ".join(cmd), flush=True)
    if quiet:
        kw.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        if quiet:
            print(r.stdout)
        raise Failed(f"{' '.join(cmd)} exited with {r.returncode}")
    return r


def check_sdist(sdist, out):
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        # the "data" filter where this Python has it (3.12, and security releases before)
        tar.extractall(out, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    tree = os.path.join(out, top)
    missing = [p for p in SDIST_MUST_HAVE if not os.path.exists(os.path.join(tree, p))]
    if missing:
        raise Failed(f"the sdist lacks {missing}")
    with open(os.path.join(tree, "README.md"), encoding="utf-8") as f:
        links = re.findall(r"\]\(([^)#\s]+)", f.read())
    dead = [link for link in links if "://" not in link and not link.startswith("mailto:")
            and not os.path.exists(os.path.join(tree, link))]
    if dead:
        raise Failed(f"README links that the sdist does not hold: {dead}")
    return tree


def check_wheel(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
            raise Failed("the wheel has no LICENSE in its .dist-info/licenses")
        if "fastbp/kernels/_cython.pyi" not in names:
            raise Failed("the wheel lacks the type stub fastbp/kernels/_cython.pyi")
        sources = [n for n in names if n.endswith((".pyx", ".c", ".h"))]
        if sources:
            raise Failed(f"the wheel carries sources it does not run: {sources}")
        ext = [n for n in names if n.startswith("fastbp/kernels/_cython") and n.endswith((".so", ".pyd"))]
        if not ext:
            raise Failed("the wheel has no compiled kernels")
        if not any(n.startswith("fastbp/kernels/_gemm") and n.endswith((".so", ".pyd"))
                   for n in names):
            raise Failed("the wheel has no compiled matrix products (_gemm)")
        if sys.platform.startswith("linux"):
            data = z.read(ext[0])
            # strip removes these sections and their names from the section-name table
            kept = [s for s in (b".symtab", b".debug_info") if s in data]
            if kept and os.environ.get("FASTBP_DEBUG", "") in ("", "0"):
                raise Failed(f"{ext[0]} is not stripped: it has {kept}")
        size = os.path.getsize(wheel)
        print(f"wheel {os.path.basename(wheel)}: {size / 1024:.0f} KiB, "
              f"extension {z.getinfo(ext[0]).file_size / 1024:.0f} KiB", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="fastbp-dist-")
    try:
        run([sys.executable, "-m", "build", "--sdist", "--outdir", os.path.join(tmp, "dist"), ROOT],
            quiet=True)
        sdist, = glob.glob(os.path.join(tmp, "dist", "*.tar.gz"))
        tree = check_sdist(sdist, os.path.join(tmp, "unpacked"))
        # The wheel is built from the sdist, as `pip install fastbp-X.tar.gz` builds it.
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
             os.path.join(tmp, "wheel"), sdist])
        wheel, = glob.glob(os.path.join(tmp, "wheel", "*.whl"))
        check_wheel(wheel)
        site = os.path.join(tmp, "site")
        run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, wheel])
        env = dict(os.environ, PYTHONPATH=site, PYTHONDONTWRITEBYTECODE="1")
        where = run([sys.executable, "-c", "import fastbp; print(fastbp.__file__)"],
                    cwd=tree, env=env, capture_output=True, text=True).stdout.strip()
        if not where.startswith(os.path.realpath(site)) and not where.startswith(site):
            raise Failed(f"the tests would import fastbp from {where}, not the installed wheel")
        pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
        run(pytest + ["-q", "--collect-only", "tests"], cwd=tree, env=env, quiet=True)
        run(pytest + ["-q", "-x"] + SUBSET, cwd=tree, env=env)
    except Failed as exc:
        print(f"check_dist: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("check_dist: the sdist and the wheel are complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
