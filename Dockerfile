# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/inboxd
COPY pyproject.toml README.md ./
COPY inboxd inboxd
COPY schema schema
COPY resolvers resolvers
COPY storage storage
COPY mail mail
RUN /opt/inboxd/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/inboxd --create-home inboxd
COPY --from=build /opt/inboxd /opt/inboxd
ENV PATH=/opt/inboxd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    INBOXD_HOST=0.0.0.0 \
    INBOXD_PORT=8000 \
    INBOXD_ENVIRONMENT=production \
    INBOXD_DATA_DIR=/var/lib/inboxd
USER inboxd
WORKDIR /var/lib/inboxd
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# Production sets INBOXD_DATABASE_URL and INBOXD_ENCRYPTION_KEYS. Migrations first, then serve.
CMD ["sh", "-c", "inboxd migrate && exec inboxd serve --no-migrate"]
