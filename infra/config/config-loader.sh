#!/usr/bin/env bash
# Validates the environment before a service starts, then (with --exec) becomes the service.
#
#   config-loader.sh [--env-file FILE]... [--service NAME] [--exec]
#
# The rules are not written here: `dex config check` (dex.runtime.settings) is the one
# source of truth for names, formats, ranges and the production rules. It prints one line
# per problem; any problem exits non-zero before the service starts. --env-file loads a
# dotenv file first (for checks outside a container); --service defaults to $SERVICE (set
# by the image); --exec replaces this shell with `dex serve NAME`, so the service is PID 1
# and receives SIGTERM itself.
set -euo pipefail

usage() {
    echo "usage: config-loader.sh [--env-file FILE]... [--service NAME] [--exec]" >&2
    exit "${1:-2}"
}

service="${SERVICE:-}"
run=false
while [ "$#" -gt 0 ]; do
    case "$1" in
        --env-file)
            [ "$#" -ge 2 ] || usage
            [ -r "$2" ] || { echo "config-loader: cannot read $2" >&2; exit 2; }
            set -a
            # shellcheck disable=SC1090  # the file is named at run time
            . "$2"
            set +a
            shift 2
            ;;
        --service)
            [ "$#" -ge 2 ] || usage
            service="$2"
            shift 2
            ;;
        --exec) run=true; shift ;;
        -h | --help) usage 0 ;;
        *) usage ;;
    esac
done

if [ -n "$service" ]; then
    dex config check --service "$service"
else
    dex config check
fi

if [ "$run" = true ]; then
    [ -n "$service" ] || { echo "config-loader: --exec needs a service" >&2; exit 2; }
    exec dex serve "$service"
fi
