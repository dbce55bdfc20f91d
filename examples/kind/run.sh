#!/usr/bin/env bash
# The waypost greeter in a local kind cluster, step by step (README.md in this directory says
# what each step shows).
#
#   examples/kind/run.sh             the whole walkthrough; the cluster stays up afterwards
#   examples/kind/run.sh --cleanup   the same, then delete the cluster (also when a step fails)
#   examples/kind/run.sh show        the latest distribution table of each client
#   examples/kind/run.sh scale N     scale the server to N pods and show the clients adapting
#   examples/kind/run.sh down        delete the cluster
#
# Settings (environment): CLUSTER (kind cluster name, default waypost), KIND_NODE_IMAGE (a
# kindest/node image for `kind create cluster --image`), DNS_SETTLE_SECS (how long to give the
# dns:/// client to see a change, default 40).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CLUSTER="${CLUSTER:-waypost}"
# The manifests name this image (with imagePullPolicy: Never).
IMAGE="waypost-greeter:dev"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
DNS_SETTLE_SECS="${DNS_SETTLE_SECS:-40}"
NAMESPACE="waypost-demo"
CONTEXT="kind-$CLUSTER"
# The clients print a table every 5 s (--report-secs in the manifests).
REPORT_SECS=5
CLIENTS=(greeter-client-kubernetes greeter-client-dns)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# kubectl against the kind cluster only, whatever the current context is.
k() { kubectl --context "$CONTEXT" --namespace "$NAMESPACE" "$@"; }

# The comment block at the top of this file.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

check_prerequisites() {
    step "Checking prerequisites: kind, kubectl, docker"
    local missing=()
    for tool in kind kubectl docker; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing: ${missing[*]} (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    fi
    docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (is it running?)"
    note "kind $(kind version | awk '{print $2}'), kubectl $(kubectl version --client 2>/dev/null | awk '/Client Version/ {print $3}'), docker $(docker version --format '{{.Server.Version}}')"
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

create_cluster() {
    step "Creating the kind cluster '$CLUSTER' (one control plane, two workers)"
    if cluster_exists; then
        note "already exists: reusing it"
    else
        local args=(create cluster --name "$CLUSTER" --config "$HERE/kind-config.yaml" --wait 180s)
        if [[ -n "$KIND_NODE_IMAGE" ]]; then
            args+=(--image "$KIND_NODE_IMAGE")
        fi
        kind "${args[@]}"
    fi
    kubectl --context "$CONTEXT" get nodes -o wide
}

build_and_load_image() {
    step "Building the greeter image $IMAGE (multi-stage: rust build, distroless runtime)"
    DOCKER_BUILDKIT=1 docker build -f "$HERE/Dockerfile" -t "$IMAGE" "$ROOT"
    step "Loading $IMAGE into the kind nodes (the manifests never pull it)"
    if ! kind load docker-image "$IMAGE" --name "$CLUSTER"; then
        # Some Docker setups (the containerd image store) trip `kind load docker-image`; an
        # archive goes through a different path.
        note "retrying through an image archive"
        local archive
        archive="$(mktemp -t waypost-greeter.XXXXXX.tar)"
        docker save "$IMAGE" -o "$archive"
        kind load image-archive "$archive" --name "$CLUSTER"
        rm -f "$archive"
    fi
}

deploy() {
    # On a second run the image tag is the same, so restart the pods to pick up the new build.
    local redeploy=0
    if k get deployment greeter >/dev/null 2>&1; then
        redeploy=1
    fi

    step "Deploying the server: 3 pods, a headless Service and a ClusterIP Service"
    kubectl --context "$CONTEXT" apply -f "$HERE/manifests/00-namespace.yaml" -f "$HERE/manifests/10-server.yaml"
    if ((redeploy)); then
        k rollout restart deployment/greeter
    fi
    k rollout status deployment/greeter --timeout=180s
    k get pods -l app.kubernetes.io/component=server -o wide
    note "The EndpointSlices behind each Service (the kubernetes:/// client watches these):"
    k get endpointslices -l 'kubernetes.io/service-name in (greeter, greeter-headless)'

    step "Deploying the clients: dns:/// (headless Service) and kubernetes:/// (EndpointSlices)"
    kubectl --context "$CONTEXT" apply -f "$HERE/manifests/"
    if ((redeploy)); then
        for client in "${CLIENTS[@]}"; do k rollout restart "deployment/$client"; done
    fi
    for client in "${CLIENTS[@]}"; do k rollout status "deployment/$client" --timeout=120s; done
}

show_permissions() {
    step "What each client's ServiceAccount may do"
    local sa verb_resource can
    for sa in greeter-client-kubernetes greeter-client-dns; do
        for verb_resource in "watch endpointslices.discovery.k8s.io" "list pods" "get secrets"; do
            # `kubectl auth can-i` exits 1 for "no", which is an answer here, not a failure.
            # shellcheck disable=SC2086 # verb and resource are two words on purpose
            can="$(k auth can-i $verb_resource --as "system:serviceaccount:$NAMESPACE:$sa" 2>/dev/null || true)"
            note "$(printf '%-26s %-40s %s' "$sa" "$verb_resource" "${can:-no}")"
        done
    done
}

# The newest distribution table a client printed: from its last "---" line to the end.
last_report() {
    k logs "deployment/$1" --tail=200 2>/dev/null |
        awk '/^---/ { block = "" } { block = block $0 "\n" } END { printf "%s", block }'
}

show() {
    local client
    for client in "$@"; do
        printf '\n    %s\n' "$client"
        last_report "$client" | sed 's/^/    /'
    done
}

wait_reports() {
    local seconds="$1" why="$2"
    note "waiting ${seconds}s: $why"
    sleep "$seconds"
}

show_distribution() {
    step "Calls per server pod, as each client counts them (kubectl logs)"
    wait_reports $((2 * REPORT_SECS + 1)) "two report periods, so the table is a full one"
    show "${CLIENTS[@]}"
}

scale_to() {
    local replicas="$1"
    step "Scaling the server to $replicas pods"
    k scale deployment/greeter --replicas="$replicas"
    k rollout status deployment/greeter --timeout=180s
    k get pods -l app.kubernetes.io/component=server
    note "kubernetes:/// sees the change in about a second (a watch event); dns:/// at its next"
    note "lookup, when the TTL runs out (CoreDNS in kind answers with TTL 30 s)."
    wait_reports $((REPORT_SECS + 2)) "one report period"
    show "${CLIENTS[@]}"
    wait_reports "$DNS_SETTLE_SECS" "the DNS TTL, so the dns:/// client looks up again"
    show "${CLIENTS[@]}"
}

contrast() {
    step "The mistake to avoid: dns:/// against the ClusterIP Service"
    kubectl --context "$CONTEXT" apply -f "$HERE/contrast/"
    k rollout status deployment/greeter-client-dns-clusterip --timeout=120s
    wait_reports $((2 * REPORT_SECS + 1)) "two report periods"
    note "One endpoint (the Service's virtual IP), one connection, one pod gets every call:"
    show greeter-client-dns-clusterip
    kubectl --context "$CONTEXT" delete -f "$HERE/contrast/" --wait=false
}

walkthrough() {
    local cleanup="$1"
    check_prerequisites
    if ((cleanup)); then
        trap down EXIT
    fi
    create_cluster
    build_and_load_image
    deploy
    show_permissions
    show_distribution
    scale_to 5
    scale_to 2
    contrast
    step "Done"
    note "Follow a client:    kubectl --context $CONTEXT -n $NAMESPACE logs -f deployment/greeter-client-kubernetes"
    note "Scale again:        $0 scale 4"
    note "Delete the cluster: $0 down"
}

down() {
    step "Deleting the kind cluster '$CLUSTER'"
    kind delete cluster --name "$CLUSTER"
}

main() {
    local command="up" cleanup=0
    local args=()
    for arg in "$@"; do
        case "$arg" in
        --cleanup) cleanup=1 ;;
        -h | --help)
            usage
            return 0
            ;;
        *) args+=("$arg") ;;
        esac
    done
    if ((${#args[@]})); then
        command="${args[0]}"
    fi

    case "$command" in
    up) walkthrough "$cleanup" ;;
    show)
        cluster_exists || die "no kind cluster '$CLUSTER': run $0 first"
        show "${CLIENTS[@]}"
        ;;
    scale)
        [[ ${#args[@]} -eq 2 && "${args[1]}" =~ ^[0-9]+$ ]] || die "usage: $0 scale N"
        cluster_exists || die "no kind cluster '$CLUSTER': run $0 first"
        scale_to "${args[1]}"
        ;;
    down) down ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
