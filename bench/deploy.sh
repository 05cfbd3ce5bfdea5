#!/bin/sh
# The deploy script of the setup this project replaces: adnanh/webhook runs it for every Docker Hub push
# with the payload's repository and tag, and it asks Swarm to move the service to that image.
#
#   deploy.sh REPO_NAME TAG
#
# Environment (set where webhook is started): DEPLOY_SERVICE, DEPLOY_REGISTRY (the registry the images
# are pulled from), DEPLOY_LOG (one line per run: "ok TAG" or "failed TAG: docker's error").
set -u
repo=$1
tag=$2
if output=$(docker service update --image "$DEPLOY_REGISTRY/$repo:$tag" "$DEPLOY_SERVICE" 2>&1); then
    echo "ok $tag" >>"$DEPLOY_LOG"
else
    echo "failed $tag: $(echo "$output" | tail -n 1)" >>"$DEPLOY_LOG"
fi
