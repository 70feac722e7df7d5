"""Build script: setuptools drives CMake for the native tile engine (pybind11 cmake_example style).

Environment:
  EDGEDEPTH_CUDA=0|1|auto   build edgedepth._native_cuda (auto: when nvcc is found; a failed
                            CUDA build under auto warns and the install goes on without it)
  EDGEDEPTH_CUDA_ARCHS      CMake CUDA architectures (default in CMakeLists.txt: SASS for 75;80;86;87 (Jetson
                            Orin);89;90 (Hopper) plus compute_90 PTX)
  EDGEDEPTH_SANITIZE=1      build the CPU module with AddressSanitizer + UBSan (docs/native.md, "Sanitizers")
  EDGEDEPTH_BUILD_TYPE      CMake build type (default Release)
  EDGEDEPTH_NATIVE=0        skip the native build altogether (the numpy reference is used, with a warning)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

# train/ and export/ install as edgedepth.train and edgedepth.export (DESIGN.md, Layout).
PACKAGE_ROOTS = {"edgedepth": "edgedepth", "edgedepth.train": "train", "edgedepth.export": "export"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in PACKAGE_ROOTS.items():
        package_dir[name] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            packages.append(".".join([name, *rel.parts]) if rel.parts else name)
    return packages, package_dir


class CMakeExtension(Extension):
    def __init__(self, name: str, target: str, optional: bool) -> None:
        super().__init__(name, sources=[])
        self.target = target
        self.optional = optional


def _cuda_mode() -> str:
    mode = os.environ.get("EDGEDEPTH_CUDA", "auto").lower()
    if mode not in {"0", "1", "auto"}:
        raise SystemExit(f"EDGEDEPTH_CUDA must be 0, 1 or auto, got {mode!r}")
    return mode


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def stale_cmake_cache(build_temp: Path, expected: dict[str, str]) -> bool:
    """True when ``build_temp`` holds a CMake cache from another build environment: a tool it
    recorded is gone (``pip install .`` builds in a temporary environment that pip deletes
    afterwards, and the next build would run its ninja), or a path it recorded differs from
    ``expected`` (the cache variables this build passes)."""
    cache = Path(build_temp) / "CMakeCache.txt"
    if not cache.is_file():
        return False
    recorded = {}
    for line in cache.read_text(encoding="utf-8", errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith(("#", "//")):
            recorded[name.split(":")[0]] = value
    gone = [recorded[k] for k in ("CMAKE_COMMAND", "CMAKE_MAKE_PROGRAM", "CMAKE_CXX_COMPILER") if recorded.get(k)
            and not Path(recorded[k]).exists()]
    changed = [k for k, v in expected.items() if k in recorded and recorded[k] != v]
    return bool(gone or changed)


def configure(source: Path, build_temp: Path, args: list[str]) -> None:
    """Run CMake's configure step in ``build_temp``, starting afresh when its cache is stale."""
    expected = dict(a[2:].split("=", 1) for a in args if a.startswith("-D") and "=" in a)
    expected = {k.split(":")[0]: v for k, v in expected.items()}
    if stale_cmake_cache(build_temp, expected):
        (build_temp / "CMakeCache.txt").unlink()
        shutil.rmtree(build_temp / "CMakeFiles", ignore_errors=True)
    subprocess.run(["cmake", str(source), *args], cwd=build_temp, check=True)


class CMakeBuild(build_ext):
    def run(self) -> None:
        if os.environ.get("EDGEDEPTH_NATIVE", "1") == "0":
            warnings.warn("EDGEDEPTH_NATIVE=0: native tile engine not built; edgedepth uses the numpy reference")
            return
        super().run()

    def build_extension(self, ext: CMakeExtension) -> None:
        try:
            self._cmake(ext)
        except (subprocess.CalledProcessError, OSError) as err:
            if not ext.optional:
                raise
            msg = f"optional extension {ext.name} was not built ({err}); continuing without it"
            warnings.warn(msg)
            print(f"WARNING: {msg}", file=sys.stderr)

    def _cmake(self, ext: CMakeExtension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / ext.target
        build_temp.mkdir(parents=True, exist_ok=True)
        build_type = os.environ.get("EDGEDEPTH_BUILD_TYPE", "Debug" if self.debug else "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DEDGEDEPTH_SANITIZE={'ON' if os.environ.get('EDGEDEPTH_SANITIZE') == '1' else 'OFF'}",
            f"-DEDGEDEPTH_BUILD_CUDA={'ON' if ext.target == '_native_cuda' else 'OFF'}",
        ]
        if ext.target == "_native_cuda":
            nvcc = _nvcc()
            if nvcc is None:
                raise OSError("no nvcc found (set CUDA_HOME or put nvcc on PATH)")
            args.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
            if archs := os.environ.get("EDGEDEPTH_CUDA_ARCHS"):
                args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        if shutil.which("ninja"):
            args += ["-GNinja", f"-DCMAKE_MAKE_PROGRAM={shutil.which('ninja')}"]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        configure(ROOT, build_temp, args)
        subprocess.run(["cmake", "--build", ".", "--target", ext.target, "-j", jobs], cwd=build_temp, check=True)


def _extensions() -> list[CMakeExtension]:
    exts = [CMakeExtension("edgedepth._native", "_native", optional=False)]
    mode = _cuda_mode()
    if mode == "1" or (mode == "auto" and _nvcc() is not None):
        exts.append(CMakeExtension("edgedepth._native_cuda", "_native_cuda", optional=(mode == "auto")))
    return exts


# setuptools runs this file as __main__ (pip's build backend too); tests import it for the helpers.
if __name__ == "__main__":
    packages, package_dir = _packages()
    setup(
        packages=packages,
        package_dir=package_dir,
        # The assets are data, not packages: listed here and nothing else picked up from version control.
        package_data={"edgedepth": ["assets/*", "assets/**/*"]},
        include_package_data=False,
        ext_modules=_extensions(),
        cmdclass={"build_ext": CMakeBuild},
        zip_safe=False,
    )
