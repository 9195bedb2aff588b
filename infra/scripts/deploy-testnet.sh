#!/usr/bin/env bash
# Deploys to the testnet cluster: see deploy-common.sh (usage: --tag TAG [--dry-run] [--smoke-url URL]).
set -euo pipefail
ENVIRONMENT=testnet
EXPECTED_CONTEXT="${DEX_KUBE_CONTEXT:-dex-testnet}"
# shellcheck source=infra/scripts/deploy-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/deploy-common.sh"
deploy "$@"
