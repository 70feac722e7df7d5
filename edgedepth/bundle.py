"""Read and verify an edgedepth bundle (`NAME.edgedepth/manifest.json` + model files).

The bundle is the contract between `edgedepth.export` (writer) and the runtime (reader); its
schema is documented in docs/interfaces.md ("Bundle"). Opening a bundle checks, before any model
is loaded, that the schema is one this version understands, that every file the manifest lists is
present with the sha256 it records, and that every model file the manifest references is covered by
a checksum. Every failure names the file at fault.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

SCHEMA = "edgedepth.bundle/1"
SUPPORTED_SCHEMAS = frozenset({SCHEMA})
MANIFEST = "manifest.json"
# The model shipped inside the wheel; produced by our own train + export pipelines.
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "default.edgedepth"

_REQUIRED = {
    "coarse": ("input_size", "mean", "std", "inputs", "outputs", "files"),
    "refiner": ("tile_size", "inputs", "outputs", "files"),
    "tiling": ("rows", "cols", "overlap_ratio", "window"),
    "camera": ("fx_norm",),
}


class BundleError(ValueError):
    """The bundle is unusable: unknown schema, malformed manifest or a checksum that fails."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _safe_relative(bundle: Path, rel: str) -> Path:
    # A manifest is data from outside: never let it point the runtime outside its own folder.
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BundleError(f"bundle {bundle}: file path {rel!r} must be relative and stay inside the bundle")
    return bundle.joinpath(*pure.parts)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. ``manifest`` is the parsed manifest.json (see docs/interfaces.md)."""

    path: Path
    manifest: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.stem))

    @property
    def coarse(self) -> Mapping[str, Any]:
        return self.manifest["coarse"]

    @property
    def refiner(self) -> Mapping[str, Any]:
        return self.manifest["refiner"]

    @property
    def tiling(self) -> Mapping[str, Any]:
        return self.manifest["tiling"]

    @property
    def fx_norm(self) -> float:
        """Training camera focal length divided by image width (both in pixels)."""
        return float(self.manifest["camera"]["fx_norm"])

    @property
    def valid_max_depth(self) -> float:
        """Farthest depth (metres, model units) the models were trained to report as known; farther
        output (sky is trained to lie beyond it) is flagged invalid. inf when the bundle says nothing."""
        value = self.manifest.get("depth", {}).get("valid_max", math.inf)
        return float(value) if value is not None else math.inf

    def formats(self, role: str) -> list[str]:
        """File formats ("onnx", "openvino", "torch", ...) the bundle holds for ``role``."""
        return list(self.manifest[role]["files"])

    def precisions(self, role: str, fmt: str) -> list[str]:
        """Precisions ("fp32", "fp16", "int8") the bundle holds for ``role`` in format ``fmt``."""
        return list(self.manifest[role]["files"].get(fmt, {}))

    def model_file(self, role: str, fmt: str, precision: str) -> Path:
        """Absolute path of the ``role`` model in ``fmt`` at ``precision``; ValueError when absent."""
        if role not in ("coarse", "refiner"):
            raise ValueError(f"role must be 'coarse' or 'refiner', got {role!r}")
        table = self.manifest[role]["files"].get(fmt)
        if not table:
            raise BundleError(
                f"bundle {self.path} has no {role} model in format {fmt!r} (has: {', '.join(self.formats(role)) or 'none'})"
            )
        if precision not in table:
            raise BundleError(
                f"bundle {self.path} has no {role} {fmt} model at precision {precision!r} "
                f"(has: {', '.join(table)})"
            )
        return _safe_relative(self.path, table[precision])

    def file_sha256(self, rel: str) -> str:
        """Recorded sha256 of the bundle file ``rel`` (path relative to the bundle)."""
        return self.manifest["files"][rel]


def _model_paths(manifest: Mapping[str, Any]) -> Iterator[str]:
    tables = [*manifest["coarse"]["files"].values(), *manifest["refiner"]["files"].values()]
    # "pipeline" mixes per-format file tables with plain values such as input_size.
    tables += [v for v in manifest.get("pipeline", {}).values() if isinstance(v, dict)]
    for table in tables:
        yield from table.values()


def _check_structure(path: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict):
        raise BundleError(f"{path / MANIFEST}: expected a JSON object, got {type(manifest).__name__}")
    schema = manifest.get("schema")
    if schema not in SUPPORTED_SCHEMAS:
        raise BundleError(
            f"{path / MANIFEST}: unknown bundle schema {schema!r}; this edgedepth reads "
            f"{', '.join(sorted(SUPPORTED_SCHEMAS))} (upgrade edgedepth or re-export the bundle)"
        )
    for section, keys in _REQUIRED.items():
        body = manifest.get(section)
        if not isinstance(body, dict):
            raise BundleError(f"{path / MANIFEST}: missing section {section!r}")
        for key in keys:
            if key not in body:
                raise BundleError(f"{path / MANIFEST}: missing key {section}.{key}")
    if not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path / MANIFEST}: missing 'files' (sha256 per file)")


def verify(path: Path, manifest: Mapping[str, Any]) -> None:
    """Check every listed file's sha256 and that every referenced model file is listed."""
    listed: dict[str, str] = manifest["files"]
    for rel, expected in listed.items():
        target = _safe_relative(path, rel)
        if not target.is_file():
            raise FileNotFoundError(f"bundle {path}: file {rel!r} listed in the manifest is missing")
        actual = sha256_file(target)
        if actual != expected:
            raise BundleError(
                f"bundle {path}: checksum mismatch for {rel!r} (manifest {expected[:12]}…, file {actual[:12]}…); "
                "the file is corrupt or was modified — re-export or re-download the bundle"
            )
    for rel in _model_paths(manifest):
        target = _safe_relative(path, rel)
        if not target.exists():
            raise FileNotFoundError(f"bundle {path}: model file {rel!r} referenced by the manifest is missing")
        # A folder model (.mlpackage, a torch checkpoint folder) is covered by checksums of its contents.
        inner = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
        for file in inner:
            key = file.relative_to(path).as_posix()
            if key not in listed:
                raise BundleError(f"bundle {path}: model file {key!r} has no sha256 in the manifest")


def open_bundle(path: str | Path | None = None, *, verify_files: bool = True) -> Bundle:
    """Open the bundle folder ``path`` (None: the embedded default) and verify it.

    Raises FileNotFoundError (missing bundle, manifest or file), BundleError (a ValueError: unknown
    schema, malformed manifest, checksum mismatch).
    """
    if path is None:
        path = DEFAULT_BUNDLE
        if not (path / MANIFEST).is_file():
            raise FileNotFoundError(
                f"the embedded default bundle {path} is missing from this installation; "
                "pass Runtime(bundle='path/to/NAME.edgedepth') or reinstall edgedepth"
            )
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"bundle {path} not found (expected a NAME.edgedepth folder)")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"bundle {path}: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{manifest_path}: not valid JSON ({err})") from err
    _check_structure(path, manifest)
    if verify_files:
        verify(path, manifest)
    return Bundle(path=path, manifest=manifest)
