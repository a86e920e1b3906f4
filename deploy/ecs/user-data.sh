#!/bin/bash
# EC2 user data for ECS container instances that run Nagare (ECS-optimized Amazon Linux).
# Set ECS_CLUSTER to your cluster; the rest is what the task definitions in this folder need.
set -euo pipefail

cat >>/etc/ecs/ecs.config <<'CONF'
ECS_CLUSTER=my-cluster
# Task definitions may only use log drivers the agent registered: app.json uses fluentd, the
# Nagare tasks themselves use awslogs.
ECS_AVAILABLE_LOGGING_DRIVERS=["json-file","awslogs","fluentd"]
# Upper bound for stopTimeout in task definitions that do not set one (ours set 30 s).
ECS_CONTAINER_STOP_TIMEOUT=30s
CONF

# Host volumes for file buffers and the embedded S3 store. ECS would create a missing
# sourcePath owned by root, and the Nagare images run as uid 10001.
install -d -o 10001 -g 10001 -m 0750 /var/lib/nagare /var/lib/nagare-aggregator
