"""`llm_cache._wire`: the wire facts the cache and the router share, and that it is neutral."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import httpx
import httpx2
import pytest

from llm_cache import _wire as wire
from llm_cache.middleware.gateway import family_of
from llm_cache.middleware.providers import resolve


@pytest.mark.parametrize("module", ["_wire", "_operations", "_refusals"])
def test_the_neutral_modules_import_neither_package(module: str) -> None:
    """`_wire`, `_operations` (what each API operation does on the provider) and `_refusals` (which
    answers refuse the credential) are read by both."""
    code = (
        f"import sys, llm_cache.{module}\n"
        "assert not [n for n in sys.modules if n.split('.')[:2] in (['llm_cache', 'middleware'], "
        "['llm_cache', 'router'])], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- credentials ----------------------------------------------------------------------------------


def test_every_family_credential_header_is_a_credential_header() -> None:
    for auth in wire.AUTH.values():
        assert set(auth.headers) <= set(wire.CREDENTIAL_HEADERS)
    assert sorted(wire.CREDENTIAL_HEADERS) == ["api-key", "authorization", "x-api-key", "x-goog-api-key"]


@pytest.mark.parametrize(
    ("family", "header"),
    [
        ("openai", ("authorization", "Bearer K")),
        ("azure", ("api-key", "K")),
        ("anthropic", ("x-api-key", "K")),
        ("gemini", ("x-goog-api-key", "K")),
        ("bedrock", ("authorization", "Bearer K")),
    ],
)
def test_a_key_is_presented_in_the_header_its_family_reads_first(family: str, header: tuple[str, str]) -> None:
    assert wire.auth_header(family, "K") == header
    name, value = header
    assert wire.AUTH[family].credential({name: value}, "") == "K"


def test_a_query_credential_is_removed_and_nothing_else() -> None:
    assert wire.without_query_credential("alt=sse&key=caller&key=other&x=") == "alt=sse&x="
    assert wire.without_query_credential("alt=sse") == "alt=sse"
    assert wire.without_query_credential("alt=sse&%6Bey=caller&k%65y=other") == "alt=sse"  # as Google decodes it
    assert wire.without_query_credential("alt=sse&name=a%2Fb") == "alt=sse&name=a%2Fb"
    assert wire.without_query_credential("alt=sse&access_token=ya29.a&oauth_token=ya29.b") == "alt=sse"


def test_an_oauth_token_in_the_query_is_a_credential_as_googles_system_parameter_says() -> None:
    assert wire.GEMINI.credential({}, "alt=sse&access_token=ya29.alice") == "ya29.alice"
    assert wire.GEMINI.credential({}, "%61ccess_token=ya29.alice") == "ya29.alice"
    assert wire.GEMINI.credential({"authorization": "Bearer ya29.alice"}, "access_token=ya29.alice") == "ya29.alice"
    for query in ("access_token=ya29.alice&key=AIza-bob", "access_token=ya29.alice&oauth_token=ya29.bob"):
        with pytest.raises(wire.AmbiguousCredential):
            wire.GEMINI.credential({}, query)


def test_a_query_credential_is_masked_however_its_name_is_written_and_nothing_else() -> None:
    masked = wire.masked_query_credential("alt=sse&key=a&%6Bey=b&k%65y=c&key&monkey=d&key=")
    assert masked == "alt=sse&key=***&%6Bey=***&k%65y=***&key&monkey=d&key=***"
    assert wire.masked_query_credential("alt=sse") == "alt=sse"
    masked = wire.masked_query_credential("access_token=ya29.a&%61ccess_token=b&oauth_token=c&tokens=d")
    assert masked == "access_token=***&%61ccess_token=***&oauth_token=***&tokens=d"


# -- paths ----------------------------------------------------------------------------------------

PATHS = [
    ("/v1/chat/completions", "openai", None),
    ("/openai/deployments/dep/chat/completions", "openai", "dep"),
    ("/v1/messages", "anthropic", None),
    ("/anthropic/v1/messages", "anthropic", None),
    ("/v1beta/models/gemini-2.0-flash:generateContent", "gemini", "gemini-2.0-flash"),
    ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", "gemini", "gemini-2.0-flash"),
    ("/v1beta/tunedModels/mine:generateContent", "gemini", "mine"),
    ("/v1/projects/p/locations/l/publishers/google/models/gemini-pro:generateContent", "gemini", "gemini-pro"),
]


@pytest.mark.parametrize(("path", "api", "model"), PATHS)
def test_the_api_a_path_speaks_is_the_one_whose_adapter_owns_it(path: str, api: str, model: str | None) -> None:
    assert wire.api_of(path) == api
    assert wire.model_in_path(path) == model
    route = resolve(path)
    assert route is not None
    assert {"azure": "openai"}.get(route.endpoint.family, route.endpoint.family) == api
    assert route.model == model


@pytest.mark.parametrize("path", ["/v1beta/tunedModels/mine:generateContent", "/v1/models/gemini-pro:generateContent"])
def test_the_gateway_sends_every_gemini_call_to_the_gemini_upstream(path: str) -> None:
    assert resolve(path) is not None and resolve(path).endpoint.family == "gemini"  # type: ignore[union-attr]
    assert family_of(path) == "gemini"


def test_an_openai_fine_tuned_model_resource_is_not_a_gemini_call() -> None:
    assert wire.api_of("/v1/models/ft:gpt-4o-mini:org:name:id") == "openai"
    assert family_of("/v1/models/ft:gpt-4o-mini:org:name:id") == "openai"


# -- errors ---------------------------------------------------------------------------------------


def test_errors_take_each_family_shape() -> None:
    assert wire.error_document("anthropic", 429, "slow down") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert wire.error_document("gemini", 429, "slow down") == {
        "error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}
    }
    assert wire.error_document("openai", 503, "down", "no_deployment") == {
        "error": {"message": "down", "type": "server_error", "param": None, "code": "no_deployment"}
    }
    assert wire.error_document(None, 400, "bad", kind="router_error")["error"]["type"] == "router_error"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_errors_carry_the_type_anthropic_documents_for_each_status(status: int, kind: str) -> None:
    assert wire.error_document("anthropic", status, "m")["error"]["type"] == kind


# -- environment references -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("os.environ/KEY", "sk"),
        (" os.environ/KEY ", "sk"),
        ("${KEY}", "sk"),
        ("https://${HOST}/v1", "https://h/v1"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("plain", "plain"),
        ("${NESTED}", "${KEY}"),  # one pass: what the environment holds is never expanded again
    ],
)
def test_environment_references_are_expanded_once(value: str, expected: str) -> None:
    env = {"KEY": "sk", "HOST": "h", "NESTED": "${KEY}"}
    assert wire.expand_env(value, env) == expected


@pytest.mark.parametrize(("value", "reference"), [("os.environ/NOPE", "os.environ/NOPE"), ("a${NOPE}b", "${NOPE}")])
def test_an_unset_variable_is_named_with_how_it_was_referenced(value: str, reference: str) -> None:
    with pytest.raises(wire.UnsetVariable) as raised:
        wire.expand_env(value, {})
    assert (raised.value.name, raised.value.reference) == ("NOPE", reference)


# -- HTTP libraries -------------------------------------------------------------------------------


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_a_request_belongs_to_the_library_that_built_it(lib: ModuleType) -> None:
    assert wire.library_of(lib.Request("POST", "https://api.example/v1/chat")) is lib


def test_a_request_of_an_api_compatible_subclass_belongs_to_its_own_package() -> None:
    class Subclassed(httpx2.Request):
        pass

    assert wire.library_of(Subclassed("GET", "https://a.example/")) is sys.modules[__name__.partition(".")[0]]


def test_the_upstream_name_is_scheme_host_port_and_path_without_the_query() -> None:
    url = httpx2.URL("https://api.example:8443/v1/chat/completions?key=secret&alt=sse")
    assert wire.upstream_name(url) == "https://api.example:8443/v1/chat/completions"
