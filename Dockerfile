# One image for every kb-ingest process (web, workers, beat, Flower, migrations); the command
# picks the role. Build: `docker compose build` or
#   docker build -t kb-ingest .                                   # real model (minilm)
#   docker build --build-arg EXTRAS= -t kb-ingest:hashing .       # no torch (EMBEDDING_BACKEND=hashing)
# No secret is baked in: every setting comes from the environment at run time.
FROM python:3.11-slim

# torch's CPU build. A bare "torch" from PyPI is the multi-GB CUDA build, so torch comes
# first from PyTorch's CPU index; the [minilm] requirements below then find it installed.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Optional dependency groups of pyproject.toml to install ("" = core only, no torch).
ARG EXTRAS=minilm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

WORKDIR /app

# Tesseract for OCR of images and scanned PDF pages (OCR_LANGUAGES: add tesseract-ocr-<lang>);
# fonts-dejavu-core for the sample images of text (devtools/samples.py, tests, demo).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# torch first, in a layer of its own that depends on the build args only.
RUN case ",${EXTRAS}," in \
        *,minilm,*) pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" ;; \
    esac

# Dependency layer: depends on pyproject.toml only, so a code change reuses it. The
# requirements are read from pyproject.toml (tomllib, no extra tool) and installed without
# the project itself.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e.strip() for e in sys.argv[1].split(',') if e.strip()]; \
print('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]))" \
        "${EXTRAS}" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Code layer: a regular (non-editable) install; the dependencies are already there.
# Templates and Alembic migrations are package data of `ingest`, so nothing is read from
# /app at run time.
COPY README.md ./
COPY celeryconfig.py ./
COPY ingest ingest
COPY workers workers
COPY webhooks webhooks
COPY devtools devtools
RUN pip install --no-deps . && rm -rf /app/*

# Unprivileged user with a fixed uid (Kubernetes runAsNonRoot, the compose tmpfs owner).
RUN groupadd --gid 10001 app \
    && useradd --create-home --uid 10001 --gid 10001 app \
    && mkdir -p /data && chown app:app /data
USER 10001:10001
WORKDIR /home/app

EXPOSE 8080
CMD ["gunicorn", "-c", "python:webhooks.gunicorn_conf", "-w", "2", "-b", "0.0.0.0:8080", "webhooks.app:create_app()"]
