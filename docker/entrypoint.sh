#!/bin/sh
# Entry point of the stimloop images: make sure the mounted models store has a registry,
# say where the weights go, then run the command (stimloop serve --workers 0 | stimloop worker).
set -eu
store="${STIMLOOP_MODELS_STORE:-/data/models_store}"
mkdir -p "$store/weights" "$store/sessions"
template="${STIMLOOP_REGISTRY_TEMPLATE:-/opt/stimloop/models_store/backbones.toml}"
if [ ! -f "$store/backbones.toml" ]; then
  cp "$template" "$store/backbones.toml"
fi
if [ -z "$(ls -A "$store/weights" 2>/dev/null)" ]; then
  echo "stimloop: no weight files in $store/weights; copy the lab's backbone file there" \
       "(e.g. imagenet_l2_3_0.pt). Only resnet50_random (a stand-in) works without one." >&2
fi
exec "$@"
