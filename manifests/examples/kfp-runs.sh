#!/usr/bin/env bash
# Submitting the CURE training pipeline with the KFP CLI (kfp 2.x SDK), from CI or by hand.
#
# A recurring run is not a Kubernetes object you apply: in KFP v2 it is created through the KFP API
# (`kfp recurring-run create`, kfp.Client().create_recurring_run, or the UI). The API server turns it into a
# ScheduledWorkflow (kubeflow.org/v1beta1), an internal custom resource of KFP that is not meant to be written
# by hand, so none is shipped here.
#
#   KFP_ENDPOINT   the KFP API, e.g. http://localhost:8888 after
#                  kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8888:80
#   EXPERIMENT     KFP experiment name, also the store prefix of checkpoints (default cure)
#   PACKAGE        compiled pipeline (default build/pipelines/cure-training.yaml from `cure compile --out build/pipelines`)
#   MODE           run (one run, waits for it) | recurring (every CRON, one at a time)
#   STORE          artifact store URI for checkpoints and histories (default s3://cure)
# Pipeline parameters follow as NAME=VALUE: every config field is one, named section__field.
set -euo pipefail
: "${KFP_ENDPOINT:?set KFP_ENDPOINT to the Kubeflow Pipelines API, e.g. http://localhost:8888}"
EXPERIMENT=${EXPERIMENT:-cure}
PACKAGE=${PACKAGE:-build/pipelines/cure-training.yaml}
MODE=${MODE:-run}
STORE=${STORE:-s3://cure}   # the store bucket (pipeline__store_uri); checkpoints land under <experiment>/
CRON=${CRON:-0 0 2 * * *}   # KFP cron has a seconds field: 02:00 every day

case "$MODE" in
  run)
    # One run; --watch waits and fails the CI job if the run fails (timeout in seconds, 0 = none).
    kfp --endpoint "$KFP_ENDPOINT" run create \
      --experiment-name "$EXPERIMENT" \
      --run-name "cure-$(date -u +%Y%m%d-%H%M%S)" \
      --package-file "$PACKAGE" \
      --watch --timeout 0 \
      pipeline__experiment="$EXPERIMENT" pipeline__store_uri="$STORE" resume=true
    ;;
  recurring)
    # A scheduled run that continues from the experiment's latest checkpoint each time. --max-concurrency 1:
    # a new run never starts while the previous one is still training, so two runs never race on `latest`.
    kfp --endpoint "$KFP_ENDPOINT" recurring-run create \
      --experiment-name "$EXPERIMENT" \
      --job-name "cure-nightly" \
      --pipeline-package-path "$PACKAGE" \
      --cron-expression "$CRON" \
      --max-concurrency 1 \
      --no-catchup \
      pipeline__experiment="$EXPERIMENT" pipeline__store_uri="$STORE" resume=true
    ;;
  *)
    echo "MODE must be run or recurring, not '$MODE'" >&2
    exit 2
    ;;
esac
