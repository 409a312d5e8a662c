# The caching gateway (`llm-cache serve`) in a slim, non-root image.
#
#   docker build -t llm-cache .
#   docker run -p 4000:4000 -v "$PWD/config.yaml:/etc/llm-cache/config.yaml:ro" \
#     -e OPENAI_API_KEY -e REDIS_PASSWORD llm-cache
#
# The config is a mounted file (native, guide or LiteLLM dialect); secrets reach it from the
# environment through `os.environ/NAME` or `${NAME}` in that file. Extras: --build-arg EXTRAS=[s3,memcached].

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY llm_cache ./llm_cache
COPY middleware ./middleware
COPY router ./router
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN set -eu; wheel="$(ls /wheels/*.whl)"; pip install "llm-cache-middleware${EXTRAS} @ file://${wheel}"; rm -rf /wheels
RUN groupadd --system --gid 10001 llmcache \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin llmcache
USER 10001:10001
WORKDIR /tmp
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/health', timeout=2)"]
ENTRYPOINT ["llm-cache", "serve", "--host", "0.0.0.0", "--port", "4000"]
CMD ["--config", "/etc/llm-cache/config.yaml"]
