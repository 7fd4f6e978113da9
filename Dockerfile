# One image for every tokenbus service; the compose command picks the service:
#   docker build -t tokenbus:dev .   then   docker run tokenbus:dev gateway | inference | llmsim | topics
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv==0.13.8

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lockfile changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself.
COPY contracts ./contracts
COPY services ./services
COPY infra ./infra
RUN uv sync --frozen --no-dev

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin tokenbus
USER tokenbus

ENV PATH="/app/.venv/bin:${PATH}"
ENTRYPOINT ["tokenbus"]
CMD ["--help"]
