#!/usr/bin/env bash
# Deploys to the staging cluster: see deploy-common.sh (usage: --tag TAG [--dry-run] [--smoke-url URL]).
set -euo pipefail
ENVIRONMENT=staging
EXPECTED_CONTEXT="${DEX_KUBE_CONTEXT:-dex-staging}"
# shellcheck source=infra/scripts/deploy-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/deploy-common.sh"
deploy "$@"
