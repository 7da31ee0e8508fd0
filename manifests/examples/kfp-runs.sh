#!/usr/bin/env bash
# Submitting the CURE training pipeline from CI or by hand, with `cure submit` (the KFP Python client underneath).
#
# Not `kfp run create --watch`: it exits 0 when the run fails. Not `kfp recurring-run create`: it sends parameters
# as strings (a BOOLEAN parameter receives "true") and takes KFP's 6-field cron only. `cure submit` types every
# parameter as the compiled pipeline declares it, exits non-zero unless the run SUCCEEDED, and takes a 5-field cron.
#
# A recurring run is not a Kubernetes object you apply: in KFP v2 it is created through the KFP API. The API
# server turns it into a ScheduledWorkflow (kubeflow.org/v1beta1), an internal custom resource of KFP that is not
# meant to be written by hand, so none is shipped here.
#
#   KFP_ENDPOINT   the KFP API, e.g. http://localhost:8888 after
#                  kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8888:80
#   EXPERIMENT     the experiment: KFP experiment name and the store prefix of its checkpoints (default cure)
#   PACKAGE        compiled pipeline (default build/pipelines/cure-training.yaml from `cure compile --out build/pipelines`)
#   MODE           run (one run of up to --segment rounds; waits, fails if the run fails)
#                  | until-done (runs one after another until TOTAL_ROUNDS) | recurring (every CRON, one at a time)
#   TOTAL_ROUNDS   rounds of the whole training over all runs (default 120, the paper's)
#   STORE          store URI of checkpoints and histories (default s3://cure)
#   CRON           schedule for MODE=recurring: 5 fields (default "0 2 * * *": 02:00 every day) or KFP's 6
#   TIMEOUT        seconds to wait for one run (default 0: no limit)
#   CURE           the cure command (default cure)
# Further pipeline parameters follow as NAME=VALUE: every config field is one, named section__field.
set -euo pipefail
: "${KFP_ENDPOINT:?set KFP_ENDPOINT to the Kubeflow Pipelines API, e.g. http://localhost:8888}"
EXPERIMENT=${EXPERIMENT:-cure}
PACKAGE=${PACKAGE:-build/pipelines/cure-training.yaml}
MODE=${MODE:-run}
TOTAL_ROUNDS=${TOTAL_ROUNDS:-120}
STORE=${STORE:-s3://cure}
CRON=${CRON:-0 2 * * *}
TIMEOUT=${TIMEOUT:-0}
CURE=${CURE:-cure}

params=(--param "pipeline__experiment=$EXPERIMENT" --param "pipeline__store_uri=$STORE"
        --param "total_rounds=$TOTAL_ROUNDS")
for kv in "$@"; do params+=(--param "$kv"); done
common=(--host "$KFP_ENDPOINT" --package "$PACKAGE" --experiment-name "$EXPERIMENT")

case "$MODE" in
  run)
    exec $CURE submit "${common[@]}" --run-name "cure-$(date -u +%Y%m%d-%H%M%S)" --wait --timeout "$TIMEOUT" "${params[@]}"
    ;;
  until-done)
    exec $CURE submit "${common[@]}" --until-done --timeout "$TIMEOUT" "${params[@]}"
    ;;
  recurring)
    # Each firing continues the experiment; max concurrency 1, no catch-up; once TOTAL_ROUNDS are done a firing
    # does nothing and succeeds.
    exec $CURE submit "${common[@]}" --run-name "$EXPERIMENT-recurring" --recurring "$CRON" "${params[@]}"
    ;;
  *)
    echo "MODE must be run, until-done or recurring, not '$MODE'" >&2
    exit 2
    ;;
esac
