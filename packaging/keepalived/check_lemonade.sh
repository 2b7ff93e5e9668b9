#!/bin/sh
# keepalived track_script for lemonade-lb: succeeds while the balancer's admin API answers
# GET /health with 200 (healthy or degraded); fails on 503 (no usable backend, or draining on
# shutdown), on any other status, and when nothing answers within 1 s.
# Usage: check_lemonade.sh [URL]   (default http://127.0.0.1:9090/health, the default admin address)
# Install: /usr/local/libexec/keepalived/check_lemonade.sh, owned by root, mode 0755
# (keepalived's enable_script_security refuses scripts that a non-root user could modify).
URL="${1:-http://127.0.0.1:9090/health}"
exec curl --fail --silent --show-error --output /dev/null --max-time 1 --noproxy '*' "$URL"
