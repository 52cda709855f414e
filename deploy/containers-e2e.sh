#!/usr/bin/env bash
# End-to-end check of the container images (opt-in; a maintainer runs it, CI does not):
#
#   bash deploy/containers-e2e.sh [WORKDIR]
#
# With podman on one host (host network): builds a Debian-bootstrapped base image if it is
# missing, the server and client images (server/Dockerfile, client/Dockerfile), synthetic data
# and credentials; starts one SuperLink and three SuperNode containers over TLS with node
# authentication (data, credentials and site YAMLs mounted read-only, outputs writable),
# registers the three SuperNode keys, runs a 1-round `tiny` federation with `flwr run` (the run
# config of tests/deploy/test_e2e.py) and checks that every site evaluated the signed model.
# Exit 0 only when every check passed; the containers are removed on exit, their logs kept in
# WORKDIR/logs/.
#
# Needs: podman (with runc here: PODMAN_RUNTIME, default runc; empty for podman's default),
# python3 with pip on the host (the wheel cache), and, only to build the base image, root and
# debootstrap. WORKDIR (default ~/.cache/clafed/containers-e2e) keeps the wheel cache
# (wheelhouse/, ~3 GB: pip downloads each wheel once, the image builds read it through a
# build-time mount and reach no index) between runs; everything else in it is made afresh.
#
# Settings (environment): CLAFED_BASE_IMAGE (default localhost/clafed-base:bookworm; any image
# with python3.11 and its venv module, e.g. docker.io/library/python:3.11-slim, is used as is),
# CLAFED_SERVER_IMAGE / CLAFED_CLIENT_IMAGE (localhost/clafed-server:e2e, localhost/clafed-client:e2e),
# CLAFED_REF (build and run a git revision, e.g. HEAD, instead of the working tree),
# DEBIAN_MIRROR (http://deb.debian.org/debian), CLAFED_E2E_RUN_TIMEOUT (1200 s for `flwr run`
# and the final evaluation), CLAFED_E2E_MOUNT_LABEL (e.g. z on SELinux hosts),
# CLAFED_E2E_KEEP=1 (leave the containers running). pip's own settings (PIP_INDEX_URL,
# PIP_EXTRA_INDEX_URL, pip.conf) decide where the wheels come from.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(realpath -m "${1:-${XDG_CACHE_HOME:-$HOME/.cache}/clafed/containers-e2e}")
BASE_IMAGE=${CLAFED_BASE_IMAGE:-localhost/clafed-base:bookworm}
SERVER_IMAGE=${CLAFED_SERVER_IMAGE:-localhost/clafed-server:e2e}
CLIENT_IMAGE=${CLAFED_CLIENT_IMAGE:-localhost/clafed-client:e2e}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUN_TIMEOUT=${CLAFED_E2E_RUN_TIMEOUT:-1200}
PYTHON=${PYTHON:-python3}
SITES=(hospital1 hospital2 hospital3)
FEDERATION=clafed-e2e
PREFIX=clafed-e2e-$$
LABEL=${CLAFED_E2E_MOUNT_LABEL:-}
RO="ro${LABEL:+,$LABEL}"
RW="rw${LABEL:+,$LABEL}"
# The containers run as this uid (the Dockerfiles' user); every file they read or write is theirs.
UID_IN=10001

PODMAN=(podman)
if [[ -n ${PODMAN_RUNTIME-runc} ]]; then PODMAN+=(--runtime "${PODMAN_RUNTIME-runc}"); fi

CONTAINERS=()
STARTED=$SECONDS
declare -A TIMES=()

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf '\ncontainers-e2e: FAILED: %s\n' "$*" >&2
    exit 1
}
# Any command that fails without its own message names itself.
trap 'rc=$?; printf "\ncontainers-e2e: FAILED: line %s exited %s: %s\n" "$LINENO" "$rc" "$BASH_COMMAND" >&2; exit $rc' ERR

podman_() { "${PODMAN[@]}" "$@"; }

cleanup() {
    local rc=$?
    trap - ERR
    set +e
    if ((${#CONTAINERS[@]})); then
        mkdir -p "$WORK/logs"
        for c in "${CONTAINERS[@]}"; do
            podman_ logs "$c" >"$WORK/logs/${c#"$PREFIX"-}.log" 2>&1
        done
        if ((rc != 0)); then
            for c in "${CONTAINERS[@]}"; do
                printf '\n----- %s (last lines; whole log in %s) -----\n' "$c" "$WORK/logs/${c#"$PREFIX"-}.log" >&2
                tail -n 25 "$WORK/logs/${c#"$PREFIX"-}.log" >&2
            done
        fi
        if [[ ${CLAFED_E2E_KEEP:-0} == 1 ]]; then
            echo "containers left running (CLAFED_E2E_KEEP=1): ${CONTAINERS[*]}" >&2
        else
            podman_ rm -f -t 10 "${CONTAINERS[@]}" >/dev/null 2>&1
        fi
    fi
    if ((rc != 0)); then echo "containers-e2e: exit $rc (work folder: $WORK)" >&2; fi
    exit $rc
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

# Give files to the containers' user (rootless podman: the uid as mapped into its namespace).
give_to_containers() {
    if [[ $(id -u) == 0 ]]; then chown -R "$UID_IN:$UID_IN" "$@"; else podman_ unshare chown -R "$UID_IN:$UID_IN" "$@"; fi
}
remove_tree() {
    if [[ $(id -u) == 0 ]]; then rm -rf "$@"; else podman_ unshare rm -rf "$@"; fi
}
image_size() { podman_ image inspect --format '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1 / 1e9}'; }
logs_of() { podman_ logs "$1" 2>&1; }
# in_log CONTAINER TEXT: the log holds TEXT (read whole: `grep -q` on a pipe would race pipefail).
in_log() { local log; log=$(logs_of "$1"); [[ $log == *"$2"* ]]; }
running() { [[ $(podman_ inspect --format '{{.State.Running}}' "$1" 2>/dev/null) == true ]]; }

# wait_log CONTAINER TEXT SECONDS WHAT: until TEXT is in the container's log (fails if it stops).
wait_log() {
    local deadline=$((SECONDS + $3))
    until in_log "$1" "$2"; do
        running "$1" || die "$4: the container $1 stopped (its log is shown below)"
        ((SECONDS < deadline)) || die "$4: not seen within $3 s (\"$2\" missing from the log of $1)"
        sleep 2
    done
}

# ---------------------------------------------------------------------------------------------
command -v podman >/dev/null || die "podman is not installed"
mkdir -p "$WORK/logs"
rm -f "$WORK/logs/"*.log
echo "work folder: $WORK"

say "base image $BASE_IMAGE"
if podman_ image exists "$BASE_IMAGE"; then
    echo "present (podman rmi $BASE_IMAGE to rebuild it)"
    TIMES[base]="present"
elif [[ $BASE_IMAGE != localhost/* ]]; then
    t=$SECONDS
    podman_ pull "$BASE_IMAGE" || die "cannot pull the base image $BASE_IMAGE"
    TIMES[base]="pulled in $((SECONDS - t)) s"
else
    [[ $(id -u) == 0 ]] || die "building the base image needs root (debootstrap); run once as root or set CLAFED_BASE_IMAGE"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    t=$SECONDS
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    # Debian 12 has python3.11, the version clafed requires; libglib2.0-0 is OpenCV's one system library.
    debootstrap --variant=minbase --include=python3,python3-venv,libglib2.0-0,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$WORK/logs/debootstrap.log" 2>&1 \
        || die "debootstrap failed (see $WORK/logs/debootstrap.log)"
    security=${MIRROR%/debian}/debian-security
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
        "$MIRROR" "$MIRROR" "$security" >"$rootfs/etc/apt/sources.list"
    chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get update -q && apt-get -y -q upgrade && apt-get clean' >>"$WORK/logs/debootstrap.log" 2>&1 \
        || die "updating the bootstrapped system failed (see $WORK/logs/debootstrap.log)"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
    tar --numeric-owner -C "$rootfs" -c . | podman_ import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    TIMES[base]="built in $((SECONDS - t)) s"
fi
echo "${TIMES[base]}, $(image_size "$BASE_IMAGE")"

say "source snapshot"
# One copy of the app serves the image builds and `flwr run`: a site runs an app only if every
# file equals its installed clafed's, so the two must not see different states of the tree.
SRC="$WORK/src"
rm -rf "$SRC"
mkdir -p "$SRC"
PARTS=(pyproject.toml README.md .dockerignore client common server simulation sites)
if [[ -n ${CLAFED_REF:-} ]]; then
    git -C "$REPO" archive "$CLAFED_REF" "${PARTS[@]}" | tar -x -C "$SRC"
    echo "git revision $CLAFED_REF ($(git -C "$REPO" rev-parse --short "$CLAFED_REF"))"
else
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' -c "${PARTS[@]}" | tar -x -C "$SRC"
    echo "working tree of $REPO"
fi

say "wheel cache $WORK/wheelhouse"
# The project's dependencies as wheels for the images' platform (CPython 3.11, glibc <= 2.36),
# downloaded by the host's pip (its index, mirror and cache settings apply) once; the builds
# install from this folder alone (--no-index), so nothing is downloaded twice.
WHEELHOUSE="$WORK/wheelhouse"
mkdir -p "$WHEELHOUSE"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON -m pip is needed on the host for the wheel cache"
"$PYTHON" - "$SRC/pyproject.toml" >"$WORK/requirements.txt" <<'EOF' || die "cannot read the dependencies from pyproject.toml"
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
# Runtime dependencies, and what the build stage needs to build clafed's wheel without an index.
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"] + ["wheel"]))
EOF
if cmp -s "$WORK/requirements.txt" "$WHEELHOUSE/.requirements"; then
    echo "up to date ($(du -sh "$WHEELHOUSE" | cut -f1))"
    TIMES[wheels]="cached"
else
    t=$SECONDS
    platforms=()
    for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
    platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
    "$PYTHON" -m pip download --quiet --dest "$WHEELHOUSE" --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 "${platforms[@]}" -r "$WORK/requirements.txt" \
        >"$WORK/logs/pip-download.log" 2>&1 || die "pip download failed (see $WORK/logs/pip-download.log)"
    cp "$WORK/requirements.txt" "$WHEELHOUSE/.requirements"
    TIMES[wheels]="$((SECONDS - t)) s"
    echo "downloaded in ${TIMES[wheels]} ($(du -sh "$WHEELHOUSE" | cut -f1))"
fi

build() {  # build ROLE IMAGE
    local t=$SECONDS
    podman_ build --network host --build-arg BASE="$BASE_IMAGE" --build-arg WHEELHOUSE=/wheelhouse \
        -v "$WHEELHOUSE:/wheelhouse:$RO" -f "$SRC/$1/Dockerfile" -t "$2" "$SRC" >"$WORK/logs/build-$1.log" 2>&1 \
        || { tail -n 30 "$WORK/logs/build-$1.log" >&2; die "building $2 failed (see $WORK/logs/build-$1.log)"; }
    TIMES[$1]=$((SECONDS - t))
    echo "$2: ${TIMES[$1]} s, $(image_size "$2")"
}
say "images"
build server "$SERVER_IMAGE"
build client "$CLIENT_IMAGE"

say "data and credentials"
D="$WORK/deploy"
remove_tree "$D"
mkdir -p "$D/superlink" "$D/sites"
for site in "${SITES[@]}"; do mkdir -p "$D/site_outputs/$site"; done
# The repository's site YAMLs as they are: their relative paths (../data/SITE, ../credentials/...,
# ../site_outputs/SITE) are the mount points below; the SuperLink's address is given at start.
cp "$SRC"/sites/hospital[123].yaml "$D/sites/"
give_to_containers "$D"
tool() { podman_ run --rm --network none -v "$D:/clafed/deploy:$RW" --entrypoint clafed "$SERVER_IMAGE" "$@"; }
tool synth --preset small --seed 0 --out /clafed/deploy/data >"$WORK/logs/synth.log" 2>&1 \
    || die "clafed synth failed (see $WORK/logs/synth.log)"
tool certs --out /clafed/deploy/credentials --server-host 127.0.0.1 --server-host localhost \
    --sites "$(IFS=,; echo "${SITES[*]}")" >"$WORK/logs/certs.log" 2>&1 \
    || die "clafed certs failed (see $WORK/logs/certs.log)"
echo "data: $(for s in "${SITES[@]}"; do printf '%s %s cases; ' "$s" $(($(wc -l <"$D/data/$s/manifest.csv") - 1)); done)"
echo "credentials: $(cd "$D/credentials" && echo *)"

# Free ports on this host (the containers share its network): the SuperLink's and one runtime
# port per SuperNode.
read -r PORT RUNTIME_PORTS < <(podman_ run --rm --network host --entrypoint python3 "$BASE_IMAGE" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
read -r -a RUNTIME_PORTS <<<"${RUNTIME_PORTS:-}"
[[ -n ${PORT:-} && ${#RUNTIME_PORTS[@]} == 3 ]] || die "cannot find free ports on this host"

say "SuperLink on 127.0.0.1:$PORT (TLS, node authentication)"
SL=$PREFIX-superlink
CONTAINERS+=("$SL")
podman_ run -d --name "$SL" --network host \
    -v "$D/credentials:/clafed/credentials:$RO" -v "$SRC:/clafed/app:$RO" -v "$D/superlink:/clafed/work:$RW" \
    "$SERVER_IMAGE" --certs /clafed/credentials --port "$PORT" >/dev/null
wait_log "$SL" "Uvicorn running on https" 180 "the SuperLink to listen"
# `flwr` runs inside the SuperLink container: its Control API answers only on 127.0.0.1 there.
mkdir -p "$D/superlink/coordinator"
printf '[superlink]\ndefault = "%s"\n\n[superlink.%s]\naddress = "127.0.0.1:%s"\nroot-certificates = "%s"\n' \
    "$FEDERATION" "$FEDERATION" "$PORT" /clafed/credentials/ca.crt >"$D/superlink/coordinator/config.toml"
give_to_containers "$D/superlink/coordinator"
flwr_() { podman_ exec -e FLWR_HOME=/clafed/work/coordinator "$SL" flwr "$@"; }
for site in "${SITES[@]}"; do
    out=$(flwr_ supernode register "/clafed/credentials/$site/supernode.pub" "$FEDERATION" --name "$site" 2>&1) \
        || { echo "$out" >&2; die "registering $site's key failed"; }
    grep -q "registered successfully" <<<"$out" || { echo "$out" >&2; die "registering $site's key failed"; }
    echo "$site's key registered"
done

say "SuperNodes"
for i in "${!SITES[@]}"; do
    site=${SITES[$i]}
    CONTAINERS+=("$PREFIX-$site")
    podman_ run -d --name "$PREFIX-$site" --network host \
        -v "$D/sites:/clafed/sites:$RO" \
        -v "$D/data/$site:/clafed/data/$site:$RO" \
        -v "$D/credentials/ca.crt:/clafed/credentials/ca.crt:$RO" \
        -v "$D/credentials/model_signing.pub:/clafed/credentials/model_signing.pub:$RO" \
        -v "$D/credentials/$site:/clafed/credentials/$site:$RO" \
        -v "$D/site_outputs/$site:/clafed/site_outputs/$site:$RW" \
        "$CLIENT_IMAGE" --site "/clafed/sites/$site.yaml" --server-address "127.0.0.1:$PORT" \
        --runtime-port "${RUNTIME_PORTS[$i]}" >/dev/null
done
for i in "${!SITES[@]}"; do
    wait_log "$PREFIX-${SITES[$i]}" "SuperNode ID" 180 "${SITES[$i]} to connect"
    echo "${SITES[$i]} connected (runtime port ${RUNTIME_PORTS[$i]})"
done

say "a 1-round tiny federation"
RUN=/clafed/work/run
CONFIG="profile=\"tiny\" rounds=1 localiser-rounds=0 run-dir=\"$RUN\" signing-key=\"/clafed/credentials/model_signing.key\" \
min-sites=3 bootstrap=50 connect-timeout=60.0 round-timeout=300.0 eval-timeout=300.0"
echo "flwr run /clafed/app $FEDERATION --run-config '$CONFIG' --stream"
t=$SECONDS
rc=0
timeout "$RUN_TIMEOUT" "${PODMAN[@]}" exec -e FLWR_HOME=/clafed/work/coordinator "$SL" \
    flwr run /clafed/app "$FEDERATION" --run-config "$CONFIG" --stream >"$WORK/logs/flwr-run.log" 2>&1 || rc=$?
grep -F "clafed.server" "$WORK/logs/flwr-run.log" | tail -n 4 || true
((rc != 124)) || die "flwr run did not finish within $RUN_TIMEOUT s (see $WORK/logs/flwr-run.log)"
# `flwr run` can return (even with 0) before the ServerApp has finished, or although it failed:
# the run folder is the evidence, so wait for every site's figures or a recorded failure.
HOST_RUN="$D/superlink/run"
deadline=$((t + RUN_TIMEOUT))
until [[ -f $HOST_RUN/evaluation_failures.json ]] || {
    all=1
    for site in "${SITES[@]}"; do [[ -f $HOST_RUN/evaluation/$site.json ]] || all=0; done
    ((all))
}; do
    ((SECONDS < deadline)) || die "no final evaluation of all three sites within $RUN_TIMEOUT s (flwr run exited $rc; see $WORK/logs/flwr-run.log)"
    running "$SL" || die "the SuperLink stopped during the run"
    sleep 5
done
RUN_SECONDS=$((SECONDS - t))

say "checks"
[[ ! -f $HOST_RUN/evaluation_failures.json ]] \
    || die "the final evaluation failed: $(cat "$HOST_RUN/evaluation_failures.json")"
((rc == 0)) || die "flwr run exited $rc although the evaluation finished (see $WORK/logs/flwr-run.log)"
for file in run.json metrics.jsonl ledger.jsonl model.pt model.sig; do
    [[ -s $HOST_RUN/$file ]] || die "the run folder has no $file"
done
# Every site's figures are a non-empty JSON object; the coordinator's signature of model.pt holds
# with the public key the sites check (verified with the image's own clafed).
podman_ exec -i "$SL" python - "$RUN" "${SITES[@]}" <<'EOF' || die "the run's records do not pass (see above)"
import json, sys
from pathlib import Path
from common.signing import verify_checkpoint

run, sites = Path(sys.argv[1]), sys.argv[2:]
for site in sites:
    figures = json.loads((run / "evaluation" / f"{site}.json").read_text())
    assert isinstance(figures, dict) and figures, f"{site}: empty figures"
    print(f"{site}: figures of {figures.get('n_cases', '?')} held-out cases")
verify_checkpoint(run / "model.pt", Path("/clafed/credentials/model_signing.pub"))
print("model.pt: the coordinator's signature verifies")
EOF
for site in "${SITES[@]}"; do
    c=$PREFIX-$site
    running "$c" || die "$site's SuperNode stopped during the run"
    in_log "$c" "$site: evaluated" || die "$site's log does not say it evaluated the model"
    ! in_log "$c" "refused an app" || die "$site refused the app (is the image's clafed the snapshot's?)"
    ! in_log "$c" "refuses the model" || die "$site refused the model's signature"
    ls "$D/site_outputs/$site"/*/evaluation >/dev/null 2>&1 || die "$site wrote no local evaluation outputs"
done
echo "every site evaluated the signed model and kept its outputs locally; all SuperNodes still running"

say "summary"
{
    echo "base image    $BASE_IMAGE: ${TIMES[base]}, $(image_size "$BASE_IMAGE")"
    echo "wheel cache   ${TIMES[wheels]}, $(du -sh "$WHEELHOUSE" | cut -f1)"
    echo "server image  $SERVER_IMAGE: built in ${TIMES[server]} s, $(image_size "$SERVER_IMAGE")"
    echo "client image  $CLIENT_IMAGE: built in ${TIMES[client]} s, $(image_size "$CLIENT_IMAGE") (layers up to the pip install shared with the server image)"
    echo "federation    1-round tiny run over TLS with node authentication: ${RUN_SECONDS} s from flwr run to the last site's figures"
    echo "result        PASSED: 3 sites registered, connected, evaluated the signed model (run folder $HOST_RUN)"
    echo "total         $((SECONDS - STARTED)) s"
} | tee "$WORK/summary.txt"
