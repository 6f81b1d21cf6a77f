# Caddy with keygate in a container.
#
#   docker build -t keygate .            (or: podman build -t keygate .)
#   docker run -d --name keygate -p 80:80 -p 443:443 -p 443:443/udp -v keygate-data:/data \
#     -v "$PWD/examples/sendgrid/Caddyfile:/etc/caddy/Caddyfile:ro" \
#     --env-file deploy/keygate.env keygate
#   docker exec keygate caddy keys issue --name crm-sync --owner sales --scope mail.send
#
# Keys (the SQLite store), certificates and Caddy's state live in the /data
# volume; mount a Caddyfile at /etc/caddy/Caddyfile and pass the provider's
# credential as an environment variable.

# Build stage: the same binary as `go build -o caddy ./cmd/caddy` (standard
# modules plus keygate), static, so the runtime stage needs no libc match.
# The cache mounts keep modules and compiled packages between builds.
FROM docker.io/library/golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o /out/caddy ./cmd/caddy \
	&& /out/caddy list-modules | grep -qx http.handlers.keygate

# Runtime stage: CA certificates for the providers' HTTPS APIs, curl for the
# health check, and an unprivileged user. Docker lets it bind :80 and :443
# (it sets net.ipv4.ip_unprivileged_port_start=0 in containers); elsewhere
# set that sysctl (podman run --sysctl …) rather than give the binary file
# capabilities, whose exec fails outright where capabilities are dropped.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends ca-certificates curl \
	&& rm -rf /var/lib/apt/lists/* \
	&& useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin caddy \
	&& install -d -o caddy -g caddy -m 0700 /data /config \
	&& install -d -m 0755 /etc/caddy
COPY --from=build /out/caddy /usr/bin/caddy

# Caddy's data directory is $XDG_DATA_HOME/caddy: keygate's store is
# /data/caddy/keygate/keys.db, the same path for `docker exec … caddy keys`.
ENV XDG_DATA_HOME=/data XDG_CONFIG_HOME=/config
VOLUME /data
USER caddy
WORKDIR /data
EXPOSE 80 443 443/udp
# The admin endpoint answers on localhost inside the container only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
	CMD curl -fsS -o /dev/null http://localhost:2019/metrics || exit 1
# A graceful stop flushes the last second of usage counts.
STOPSIGNAL SIGTERM
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
