"""Read and verify an edgedepth bundle (`NAME.edgedepth/manifest.json` + model files).

The bundle is the contract between `edgedepth.export` (writer) and the runtime (reader); its
schema is documented in docs/interfaces.md ("Bundle") and checked by `edgedepth.manifest`.
Opening a bundle checks, before any model is loaded, that the manifest is valid, that every file
it lists is present with the sha256 it records, and that every file a model loads is covered by a
checksum: the model file itself and what comes with it (an OpenVINO ``.bin`` beside its ``.xml``,
``model.json`` beside a torch checkpoint, every file of a folder model). Every failure names the
file at fault.

One safe-path rule covers every file a bundle names (:func:`safe_parts`): relative, inside the
bundle, no ``..``, no drive or backslash, and no symbolic link anywhere on the way (files are opened
component by component without following links). ONNX models must be self-contained: a model
whose weights are "external data" in another file is refused (`edgedepth.onnx_external`). Loaders
get the bytes that were hashed (:meth:`Bundle.model_bytes`), never a second read of the path.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterator, Mapping

from .manifest import SCHEMA, SUPPORTED_SCHEMAS, ManifestError, check_manifest
from .onnx_external import ONNXFormatError, external_data_locations

__all__ = ["SCHEMA", "SUPPORTED_SCHEMAS", "MANIFEST", "DEFAULT_BUNDLE", "BundleError", "Bundle", "open_bundle",
           "sha256_file", "safe_parts"]

MANIFEST = "manifest.json"
# The model shipped inside the wheel; produced by our own train + export pipelines.
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "assets" / "default.edgedepth"


class BundleError(ValueError):
    """The bundle is unusable: unknown schema, malformed manifest, unsafe path or a checksum that fails."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def safe_parts(rel: Any) -> tuple[str, ...]:
    """The components of a bundle-relative path, or BundleError: a manifest is data from outside, so
    a path must be a plain relative POSIX path that cannot leave the bundle on any OS (no ``..``,
    ``.``, empty part, backslash, drive, colon or NUL)."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"file path {rel!r} must be a non-empty string")
    parts = tuple(PurePosixPath(rel).parts)
    if (rel.startswith("/") or PureWindowsPath(rel).anchor or any(c in rel for c in "\\:\0")
            or any(p in ("", ".", "..") for p in parts) or rel.split("/") != list(parts)):
        raise BundleError(f"file path {rel!r} must be relative and stay inside the bundle "
                          "(plain names separated by '/', no '..', drive or backslash)")
    return parts


def _link_error(bundle: Path, rel: str) -> BundleError:
    return BundleError(f"bundle {bundle}: {rel!r} is or passes through a symbolic link; bundles may not "
                       "contain links (copy the file into the bundle)")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FD = _NOFOLLOW and os.open in os.supports_dir_fd


def _open_inside(bundle: Path, rel: str) -> int:
    """A read-only descriptor of the regular file ``rel`` inside ``bundle``, reached without following
    any link (component by component, relative to the folder opened before, so nothing can be
    swapped for a link between the check and the open)."""
    parts = safe_parts(rel)
    try:
        if _DIR_FD:
            folder = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for part in parts[:-1]:
                    inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=folder)
                    os.close(folder)
                    folder = inner
                fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=folder)
            finally:
                os.close(folder)
        else:  # Windows: no dir_fd; refuse links and junctions (reparse points) on the way, then open
            path = bundle
            for part in parts:
                path = path / part
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode) or getattr(info, "st_file_attributes", 0) & 0x400:
                    raise _link_error(bundle, rel)
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"bundle {bundle}: file {rel!r} is missing") from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise _link_error(bundle, rel) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"bundle {bundle}: {rel!r} is not a regular file")
    return fd


def _read_inside(bundle: Path, rel: str) -> bytes:
    with os.fdopen(_open_inside(bundle, rel), "rb") as fh:
        return fh.read()


def _sha256_inside(bundle: Path, rel: str) -> str:
    digest = hashlib.sha256()
    with os.fdopen(_open_inside(bundle, rel), "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _folder_files(bundle: Path, rel: str) -> list[str]:
    """Every file inside the folder model ``rel`` (an .mlpackage), refusing links."""
    root = bundle.joinpath(*safe_parts(rel))
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                raise _link_error(bundle, path.relative_to(bundle).as_posix())
            if name in files:
                found.append(path.relative_to(bundle).as_posix())
    return sorted(found)


def _companions(rel: str) -> list[str]:
    """Files a backend loads along with the model file ``rel`` (by its name)."""
    pure = PurePosixPath(rel)
    if pure.suffix == ".xml":  # OpenVINO IR: weights in the .bin of the same stem
        return [pure.with_suffix(".bin").as_posix()]
    if pure.name == "model.safetensors":  # torch checkpoint folder: how to rebuild the models
        return [(pure.parent / "model.json").as_posix()]
    return []


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

    def _model_rel(self, role: str, fmt: str, precision: str) -> str:
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
        return table[precision]

    def model_file(self, role: str, fmt: str, precision: str) -> Path:
        """Absolute path of the ``role`` model in ``fmt`` at ``precision``; ValueError when absent."""
        return self.path.joinpath(*safe_parts(self._model_rel(role, fmt, precision)))

    def model_bytes(self, role: str, fmt: str, precision: str) -> dict[Path, bytes]:
        """The bytes of every file the ``role`` model loads (the model file and its companions), by
        absolute path, read once, without following links, and checked against the manifest's sha256
        now: a loader given these never reads a file that could have changed since it was hashed.
        Empty for a folder model (an .mlpackage, which its loader only opens by path)."""
        rel = self._model_rel(role, fmt, precision)
        if self.path.joinpath(*safe_parts(rel)).is_dir():
            for inner in _folder_files(self.path, rel):
                _check_digest(self.path, inner, self.manifest["files"], _sha256_inside(self.path, inner))
            return {}
        out = {}
        for name in [rel, *_companions(rel)]:
            data = _read_inside(self.path, name)
            _check_digest(self.path, name, self.manifest["files"], hashlib.sha256(data).hexdigest())
            out[self.path.joinpath(*safe_parts(name))] = data
        return out

    def file_sha256(self, rel: str) -> str:
        """Recorded sha256 of the bundle file ``rel`` (path relative to the bundle)."""
        return self.manifest["files"][rel]


def _check_digest(bundle: Path, rel: str, listed: Mapping[str, str], actual: str) -> None:
    if rel not in listed:
        raise BundleError(f"bundle {bundle}: model file {rel!r} has no sha256 in the manifest")
    if actual != listed[rel]:
        raise BundleError(
            f"bundle {bundle}: checksum mismatch for {rel!r} (manifest {listed[rel][:12]}…, file {actual[:12]}…); "
            "the file is corrupt or was modified — re-export or re-download the bundle"
        )


def _model_paths(manifest: Mapping[str, Any]) -> Iterator[str]:
    tables = [*manifest["coarse"]["files"].values(), *manifest["refiner"]["files"].values()]
    # "pipeline" mixes per-format file tables with plain values such as input_size.
    tables += [v for v in manifest.get("pipeline", {}).values() if isinstance(v, dict)]
    for table in tables:
        yield from table.values()


def verify(path: Path, manifest: Mapping[str, Any]) -> None:
    """Check every listed file's sha256, that every file a model loads is listed, and that every ONNX
    model is self-contained."""
    listed: dict[str, str] = manifest["files"]
    onnx_models = {rel for rel in _model_paths(manifest) if PurePosixPath(rel).suffix == ".onnx"}
    for rel in listed:
        if rel in onnx_models:  # read once: hashed and scanned for external data
            data = _read_inside(path, rel)
            _check_digest(path, rel, listed, hashlib.sha256(data).hexdigest())
            _check_self_contained(path, rel, data)
        else:
            _check_digest(path, rel, listed, _sha256_inside(path, rel))
    for rel in _model_paths(manifest):
        target = path.joinpath(*safe_parts(rel))
        if not target.exists() and not target.is_symlink():
            raise FileNotFoundError(f"bundle {path}: model file {rel!r} referenced by the manifest is missing")
        # A folder model (.mlpackage) is covered by checksums of its contents.
        for inner in _folder_files(path, rel) if target.is_dir() and not target.is_symlink() else [rel, *_companions(rel)]:
            if inner not in listed:
                raise BundleError(f"bundle {path}: model file {inner!r} has no sha256 in the manifest")


def _check_self_contained(bundle: Path, rel: str, model: bytes) -> None:
    try:
        external = external_data_locations(model)
    except ONNXFormatError as err:
        raise BundleError(f"bundle {bundle}: {rel!r} is not a valid ONNX model ({err})") from None
    if external:
        raise BundleError(
            f"bundle {bundle}: ONNX model {rel!r} keeps weights in other files ({', '.join(sorted(set(external)))}); "
            "edgedepth loads self-contained ONNX files only (re-export without external data)"
        )


def open_bundle(path: str | Path | None = None, *, verify_files: bool = True) -> Bundle:
    """Open the bundle folder ``path`` (None: the embedded default) and verify it.

    Raises FileNotFoundError (missing bundle, manifest or file), BundleError (a ValueError: unknown
    schema, invalid manifest, unsafe path or link, checksum mismatch). ``verify_files=False`` skips
    the checksums (the manifest is still validated).
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
    try:
        manifest = json.loads(_read_inside(path, MANIFEST).decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"bundle {path}: {MANIFEST} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{manifest_path}: not valid JSON ({err})") from err
    try:
        check_manifest(manifest)
    except ManifestError as err:
        raise BundleError(f"{manifest_path}: {err}") from None
    for rel in [*manifest["files"], *_model_paths(manifest)]:
        try:
            safe_parts(rel)
        except BundleError as err:
            raise BundleError(f"{manifest_path}: {err}") from None
    if verify_files:
        verify(path, manifest)
    return Bundle(path=path, manifest=manifest)
