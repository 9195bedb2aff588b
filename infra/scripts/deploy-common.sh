#!/usr/bin/env bash
# The deployment, written once; sourced by deploy-staging.sh and deploy-testnet.sh, which set
# ENVIRONMENT (the env file infra/config/env.$ENVIRONMENT.env) and EXPECTED_CONTEXT.
#
#   deploy-<environment>.sh --tag TAG [--dry-run] [--smoke-url URL]
#
# Checks the tools and the kube context, applies the namespace, the sealed secrets, the
# dex-config ConfigMap (from the env file), the five deployments with image tag TAG, the
# network policies and the ingress; waits for every rollout; smoke-tests GET /readyz through
# the ingress (--smoke-url, e.g. https://api.staging.dex.example) or a port-forward to the
# gateway. A failed rollout or smoke test rolls every deployment back (kubectl rollout undo)
# and exits 1. --dry-run prints the commands instead of running them.
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAMESPACE=dex
SERVICES=(gateway matching-engine market-data risk-engine persistence)
IMAGE_REPO=ghcr.io/dex-exchange
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-600s}"
SMOKE_PORT="${SMOKE_PORT:-18080}"

tag=""
dry_run=false
smoke_url=""

die() {
    echo "deploy-${ENVIRONMENT}: $*" >&2
    exit 1
}

usage() {
    echo "usage: deploy-${ENVIRONMENT}.sh --tag TAG [--dry-run] [--smoke-url URL]" >&2
    exit 2
}

# Runs a command, or prints it with --dry-run.
run() {
    if [ "$dry_run" = true ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

# Applies a manifest read from stdin (rendered here), or prints what it would apply.
apply_rendered() {
    local what="$1"
    if [ "$dry_run" = true ]; then
        printf '+ kubectl apply -f - (%s)\n' "$what"
        cat >/dev/null
    else
        kubectl apply -f -
    fi
}

parse_args() {
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --tag)
                [ "$#" -ge 2 ] || usage
                tag="$2"
                shift 2
                ;;
            --dry-run) dry_run=true; shift ;;
            --smoke-url)
                [ "$#" -ge 2 ] || usage
                smoke_url="$2"
                shift 2
                ;;
            -h | --help) usage ;;
            *) usage ;;
        esac
    done
    [ -n "$tag" ] || usage
    [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not an image tag: $tag"
}

check_tools() {
    local tool
    for tool in kubectl curl sed; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
    done
    local context
    context="$(kubectl config current-context)" || die "no kube context"
    [ "$context" = "$EXPECTED_CONTEXT" ] ||
        die "kube context is $context, expected $EXPECTED_CONTEXT (kubectl config use-context)"
}

apply_all() {
    run kubectl apply -f "$INFRA/k8s/namespace.yml"
    run kubectl apply -f "$INFRA/k8s/secrets/sealed-secrets.yml"
    # rendered first, then applied: one command after the other (a pipe runs both at once)
    local configmap
    configmap="$(kubectl -n "$NAMESPACE" create configmap dex-config \
        --from-env-file="$INFRA/config/env.${ENVIRONMENT}.env" --dry-run=client -o yaml)"
    printf '%s\n' "$configmap" | apply_rendered "configmap dex-config from env.${ENVIRONMENT}.env"
    local service
    for service in "${SERVICES[@]}"; do
        sed -E "s#(image: ${IMAGE_REPO}/dex-${service}):[^[:space:]]+#\\1:${tag}#" \
            "$INFRA/k8s/${service}/deployment.yml" |
            apply_rendered "${service} with image tag ${tag}"
    done
    run kubectl apply -f "$INFRA/k8s/network-policy.yml"
    run kubectl apply -f "$INFRA/k8s/ingress.yml"
}

wait_rollouts() {
    local service
    for service in "${SERVICES[@]}"; do
        run kubectl -n "$NAMESPACE" rollout status "deployment/${service}" \
            --timeout="$ROLLOUT_TIMEOUT" || return 1
    done
}

smoke_test() {
    if [ -n "$smoke_url" ]; then
        run curl --fail --silent --show-error --max-time 10 "${smoke_url}/readyz"
        return
    fi
    if [ "$dry_run" = true ]; then
        run kubectl -n "$NAMESPACE" port-forward svc/gateway "${SMOKE_PORT}:8080"
        run curl --fail --silent --show-error --max-time 10 "http://127.0.0.1:${SMOKE_PORT}/readyz"
        return
    fi
    kubectl -n "$NAMESPACE" port-forward svc/gateway "${SMOKE_PORT}:8080" >/dev/null &
    local forward=$! attempt status=1
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if curl --fail --silent --show-error --max-time 5 \
            "http://127.0.0.1:${SMOKE_PORT}/readyz"; then
            status=0
            break
        fi
        echo "smoke test: attempt ${attempt} failed" >&2
        sleep 2
    done
    kill "$forward" 2>/dev/null || true
    return "$status"
}

rollback() {
    echo "deploy-${ENVIRONMENT}: $1; rolling back" >&2
    local service
    for service in "${SERVICES[@]}"; do
        run kubectl -n "$NAMESPACE" rollout undo "deployment/${service}" || true
    done
    exit 1
}

deploy() {
    parse_args "$@"
    check_tools
    echo "deploying ${tag} to ${ENVIRONMENT} (context ${EXPECTED_CONTEXT})"
    apply_all
    wait_rollouts || rollback "a rollout did not complete"
    smoke_test || rollback "the smoke test (GET /readyz) failed"
    echo "deployed ${tag} to ${ENVIRONMENT}"
}
