# One image for every Switchboard service; the command picks the role
# (`switchboard edge`, `switchboard agent --name <agent>`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install --no-cache-dir .
COPY scenarios ./scenarios
ENV SWITCHBOARD_SCENARIOS_DIR=/app/scenarios
USER nobody
ENTRYPOINT ["switchboard"]
