"""Atomic bundle writer: stage every file in a temporary folder, hash it, verify, rename.

The reader (schema constant, manifest name, sha256) is :mod:`edgedepth.bundle`; the writer reuses
it and re-opens the staged bundle with the reader's own verification before the rename, so a
bundle that the runtime would refuse is never published, and a crash never leaves half a bundle.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgedepth import __version__
from edgedepth.atomic import make_staging_dir, publish_dir
from edgedepth.bundle import MANIFEST, SCHEMA, open_bundle, sha256_file

SUFFIX = ".edgedepth"


class BundleWriter:
    """Stage a bundle for ``out`` (a ``NAME.edgedepth`` folder) and publish it with :meth:`commit`.

    ``with BundleWriter(out) as w: w.file("refiner.onnx") ...; w.commit(manifest)`` — leaving the
    block without a commit (an exception) removes the staging folder.
    """

    def __init__(self, out: str | Path, *, overwrite: bool = False) -> None:
        out = Path(out).expanduser().resolve()
        if out.suffix != SUFFIX:
            raise ValueError(f"bundle path must end in {SUFFIX!r} (NAME{SUFFIX}), got {out}")
        if out.exists() and not overwrite:
            raise FileExistsError(f"bundle {out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        if out.exists() and not (out / MANIFEST).is_file():
            raise FileExistsError(f"{out} exists and is not a bundle (no {MANIFEST}); refusing to replace it")
        self.out = out
        self.name = out.name[: -len(SUFFIX)]
        self.staging = make_staging_dir(out)
        self._done = False

    def file(self, rel: str) -> Path:
        """Absolute staging path for the bundle file ``rel`` (POSIX relative path); parents created."""
        target = self.staging.joinpath(*rel.split("/"))
        if self.staging not in target.resolve().parents:
            raise ValueError(f"bundle file {rel!r} must stay inside the bundle")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def rel(self, path: Path) -> str:
        """The bundle-relative POSIX name of a staged ``path``."""
        return Path(path).resolve().relative_to(self.staging.resolve()).as_posix()

    def checksums(self) -> dict[str, str]:
        """sha256 of every staged file except the manifest, by relative path."""
        files = sorted(p for p in self.staging.rglob("*") if p.is_file() and p.name != MANIFEST)
        return {self.rel(p): sha256_file(p) for p in files}

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write ``manifest.json`` (schema, version, name and checksums added), verify, publish."""
        body = {"schema": SCHEMA, "edgedepth_version": __version__, "name": self.name, **manifest}
        body["files"] = self.checksums()
        (self.staging / MANIFEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        open_bundle(self.staging)  # the runtime's own checks: schema, sections, every checksum
        publish_dir(self.staging, self.out)
        self._done = True
        return self.out

    def abort(self) -> None:
        """Remove the staging folder (nothing is published)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._done = True

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()
