# supportbot: `supportbot serve` as a non-root user, state in /data (mount a volume, or use PostgreSQL).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/supportbot.db \
    SUPPORTBOT_LOG_FORMAT=json \
    SUPPORTBOT_DRAIN_TIMEOUT_S=8
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /data --create-home supportbot
USER supportbot
WORKDIR /data
EXPOSE 3000
# SIGTERM drains in-flight messages for SUPPORTBOT_DRAIN_TIMEOUT_S, inside `docker stop`'s default 10 s grace;
# raise both together (docker stop -t 30, or compose's stop_grace_period) for slow models.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4).status == 200 else 1)"]
# Inside a container the port must be reachable from outside: bind 0.0.0.0, which requires
# SUPPORTBOT_DASHBOARD_TOKEN to be set (the dashboard is then behind that token).
CMD ["supportbot", "serve", "--host", "0.0.0.0", "--port", "3000"]
