# One image for every Python service of star-leaders: archive-streamer, the machida workers and the
# dashboard.  docker-compose.yaml runs it with one command per service; Kafka is the official image.
# The dashboard's browser libraries (uPlot), from npm as pinned in dashboard/package-lock.json, the
# way `make env` fetches them; only the files served go into the image.
FROM node:20-slim AS vendor
WORKDIR /vendor
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
    && mkdir out \
    && cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css node_modules/uplot/LICENSE out/

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GHARCHIVE_CACHE=/cache

# The runtime dependencies, exactly as pinned in pyproject.toml (no dev extra), in a layer of their own
# so that code changes do not reinstall them.  confluent-kafka's wheel bundles librdkafka: no compiler.
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself (a regular, non-editable install; .dockerignore keeps only the packages and
# pyproject.toml in the build context), then the sources go: the services run from site-packages.
COPY . /src
COPY --from=vendor /vendor/out /src/dashboard/static/vendor
RUN pip install --no-deps /src \
    && pip check \
    && rm -rf /src

# Non-root.  /cache is created here, owned by the user, so that the named volume compose mounts there
# starts out writable (Docker copies the image's ownership into a new, empty named volume).
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /cache \
    && chown app:app /cache
USER app
WORKDIR /home/app

EXPOSE 5000
CMD ["star-leaders-dashboard", "--host", "0.0.0.0", "--port", "5000"]
