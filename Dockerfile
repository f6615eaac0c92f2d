# hroot in a container: `docker compose up` (compose.yaml) or
#   docker build -t hroot . && docker run -p 5000:5000 -v hroot-data:/data hroot
FROM python:3.11-slim

# git is not needed to serve (dulwich writes the repository) but it is how people look at
# what hroot stored: `docker compose exec hroot git --git-dir /data/hroot.git log --all`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY storage ./storage
COPY registry ./registry
COPY bench ./bench
RUN python -m pip install --no-cache-dir -c constraints.txt . && rm -rf /src

# Data lives in /data (a volume); the server runs as an unprivileged user that owns it.
RUN useradd --system --home-dir /data hroot && mkdir /data && chown hroot:hroot /data
USER hroot
WORKDIR /data
VOLUME /data
EXPOSE 5000

# Healthy when /health answers 200 (it needs no credentials), over HTTPS (--tls-cert) or
# HTTP: the process is up. /ready says more (the store, the disk, a follower's lag) but must
# not get a registry restarted for a full disk.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s \
    CMD ["python", "-c", "import ssl, sys, urllib.error, urllib.request\nfor scheme in ('https', 'http'):\n    try:\n        urllib.request.urlopen(scheme + '://127.0.0.1:5000/health', timeout=2, context=ssl._create_unverified_context())\n        sys.exit(0)\n    except urllib.error.HTTPError:\n        sys.exit(1)\n    except OSError:\n        pass\nsys.exit(1)"]

ENTRYPOINT ["hroot"]
CMD ["serve", "--listen", "0.0.0.0:5000", "--data", "/data/hroot.git"]
