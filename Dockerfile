# The image of `karma worker` and `karma bridge` in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY karma ./karma
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY bridge ./bridge
RUN pip install --no-cache-dir . && useradd --system --home /app karma \
    && mkdir -p /app/.karma && chown -R karma /app
USER karma
ENTRYPOINT ["karma"]
CMD ["--help"]
