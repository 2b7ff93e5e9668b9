#!/bin/sh
# Announce this node's VIP over BGP (through BIRD 2) only while its lemonade-lb is healthy: an
# ECMP fleet's health gate. Polls GET $URL; after RISE answers of 200 (healthy or degraded) it
# runs `birdc enable PROTOCOL`, after FALL failures (503: no usable backend or draining; another
# status; no answer within 1 s) `birdc disable PROTOCOL`. Until the first decision it changes
# nothing, so a restart of this program does not withdraw a healthy node. It repeats the current
# decision every RESYNC checks, which re-announces after BIRD itself restarted.
# On SIGTERM/SIGINT it withdraws at once, waits GRACE seconds while the router converges (the
# balancer still accepts meanwhile), and exits 0. lemonade-lb-announce.service runs it and is
# stopped before the balancer, so `systemctl stop lemonade-lb` withdraws first and drains after.
# Settings (environment; the unit reads /etc/default/lemonade-lb-announce):
#   LEMONADE_ANNOUNCE_URL       http://127.0.0.1:9090/health  (/health?service=NAME: one service)
#   LEMONADE_ANNOUNCE_PROTOCOL  vip     the BIRD static protocol holding the VIP's route
#   LEMONADE_ANNOUNCE_BIRDC     birdc   the command, e.g. "birdc -s /run/bird/bird.ctl"
#   LEMONADE_ANNOUNCE_INTERVAL  0.5     seconds between checks
#   LEMONADE_ANNOUNCE_RISE      2       successes in a row to announce
#   LEMONADE_ANNOUNCE_FALL      1       failures in a row to withdraw
#   LEMONADE_ANNOUNCE_GRACE     2       seconds between the withdrawal and the exit on stop
#   LEMONADE_ANNOUNCE_RESYNC    10      checks between repeats of the current decision
# Install: /usr/local/libexec/lemonade/lemonade-announce.sh, owned by root, mode 0755. Needs curl.
set -u
URL="${LEMONADE_ANNOUNCE_URL:-http://127.0.0.1:9090/health}"
PROTOCOL="${LEMONADE_ANNOUNCE_PROTOCOL:-vip}"
BIRDC="${LEMONADE_ANNOUNCE_BIRDC:-birdc}"
INTERVAL="${LEMONADE_ANNOUNCE_INTERVAL:-0.5}"
RISE="${LEMONADE_ANNOUNCE_RISE:-2}"
FALL="${LEMONADE_ANNOUNCE_FALL:-1}"
GRACE="${LEMONADE_ANNOUNCE_GRACE:-2}"
RESYNC="${LEMONADE_ANNOUNCE_RESYNC:-10}"

log() { echo "lemonade-announce: $*"; }

# birdc enable|disable: true when BIRD confirms ("vip: enabled", "vip: already disabled", ...)
bird() {
  out=$($BIRDC "$1" "$PROTOCOL" 2>&1)
  case "$out" in
    *"$PROTOCOL: $1d"* | *"$PROTOCOL: already $1d"*) return 0 ;;
  esac
  log "birdc $1 $PROTOCOL failed: $(echo "$out" | tr '\n' ' ')"
  return 1
}

job=
stopping() {
  trap '' TERM INT
  [ -n "$job" ] && kill "$job" 2>/dev/null
  log "stopping: withdrawing the VIP, then waiting ${GRACE}s for the router"
  bird disable || log "the withdrawal failed: the VIP may still be announced"
  sleep "$GRACE"
  log "stopped"
  exit 0
}
trap stopping TERM INT

state=unknown # announced | withdrawn | unknown
ok=0
bad=0
since=0
log "checking $URL every ${INTERVAL}s (rise $RISE, fall $FALL); BIRD protocol $PROTOCOL"
while :; do
  # in the background, so that a stop is handled at once and not after the check
  curl --fail --silent --output /dev/null --max-time 1 --noproxy '*' "$URL" &
  job=$!
  if wait "$job"; then
    ok=$((ok + 1)); bad=0
    if [ "$state" != announced ] && [ "$ok" -ge "$RISE" ]; then
      if bird enable; then log "healthy: VIP announced"; state=announced; since=0; fi
    fi
  else
    rc=$?
    bad=$((bad + 1)); ok=0
    if [ "$state" != withdrawn ] && [ "$bad" -ge "$FALL" ]; then
      if bird disable; then log "unhealthy (curl exit $rc; 22: an HTTP error status such as 503): VIP withdrawn"; state=withdrawn; since=0; fi
    fi
  fi
  job=
  since=$((since + 1))
  if [ "$since" -ge "$RESYNC" ]; then
    since=0
    case "$state" in
      announced) bird enable ;;
      withdrawn) bird disable ;;
    esac
  fi
  sleep "$INTERVAL" &
  job=$!
  wait "$job"
  job=
done
