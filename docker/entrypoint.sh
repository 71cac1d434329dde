#!/bin/sh
# Entry point of the stimloop images: check that the mounted models store can be written by
# the container's user, make sure it has its folders, say where the weights go, then run the
# command (stimloop serve --workers 0 | stimloop worker). The API and the workers copy the
# packaged default registry into an empty store themselves.
set -eu
store="${STIMLOOP_MODELS_STORE:-/data/models_store}"
probe="$store/.stimloop-write-check"
if ! { mkdir -p "$store" && : > "$probe" && rm -f "$probe"; } 2>/dev/null; then
  owner=$(stat -c '%u:%g' "$store" 2>/dev/null || echo "unknown")
  echo "stimloop: the models store $store (owner $owner) cannot be written by this container's" \
       "user $(id -u):$(id -g). Set STIMLOOP_UID and STIMLOOP_GID in .env to the owner of the" \
       "host folder (run: stat -c '%u %g' models_store), or give that folder to uid $(id -u)" \
       "(sudo chown -R $(id -u):$(id -g) models_store)." >&2
  exit 78
fi
mkdir -p "$store/weights" "$store/sessions"
if [ -z "$(ls -A "$store/weights" 2>/dev/null)" ]; then
  echo "stimloop: no weight files in $store/weights; copy the lab's backbone file there" \
       "(e.g. imagenet_l2_3_0.pt). Only resnet50_random (a stand-in) works without one." >&2
fi
exec "$@"
