#!/bin/sh
# Entry point of the stimloop images: make sure the mounted models store has its folders, say
# where the weights go, then run the command (stimloop serve --workers 0 | stimloop worker).
# The API and the workers copy the packaged default registry into an empty store themselves.
set -eu
store="${STIMLOOP_MODELS_STORE:-/data/models_store}"
mkdir -p "$store/weights" "$store/sessions"
if [ -z "$(ls -A "$store/weights" 2>/dev/null)" ]; then
  echo "stimloop: no weight files in $store/weights; copy the lab's backbone file there" \
       "(e.g. imagenet_l2_3_0.pt). Only resnet50_random (a stand-in) works without one." >&2
fi
exec "$@"
