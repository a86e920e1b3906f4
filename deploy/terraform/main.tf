# Nagare on an existing ECS cluster (EC2 capacity):
#
#   every container instance: <name_prefix>-forwarder (DAEMON, host network, :24224, :24220)
#       |  out_forward, acks, keepalive (NAGARE_AGGREGATOR_HOST = the NLB's DNS name)
#       v
#   internal NLB, TCP :24224  ->  target group (ip targets, HTTP health check GET /health :24220)
#       v
#   <name_prefix>-aggregator (REPLICA, awsvpc: one IP per task, so the admin port is fixed)
#
# Why awsvpc for the aggregators: a target group health check goes to "traffic-port" or to ONE
# fixed port. With bridge networking and dynamic host ports, each task's admin port is a
# different random host port, so no fixed port can reach them all, and "traffic-port" is the
# forward protocol port, which does not speak HTTP. With awsvpc each task has its own IP and
# the same fixed ports (24224, 24220), so the health check port is simply 24220.
# deploy/README.md discusses the alternatives.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  forwarder_name  = "${var.name_prefix}-forwarder"
  aggregator_name = "${var.name_prefix}-aggregator"

  bucket_arn = "arn:${local.partition}:s3:::${var.s3_bucket_name}"
  group_arn  = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${var.log_group_prefix}*"

  forward_port = 24224
  admin_port   = 24220

  shutdown_note = "SIGTERM -> keep accepting 5s (shutdown_accept_period) -> inputs stop, each connection acks its batch and closes -> outputs drain <= 20s (shutdown_drain_timeout) -> exit 0; stopTimeout ${var.stop_timeout}s"
}

# ---- Nagare's own stderr (awslogs) and pre-created service log groups ----------------------------

resource "aws_cloudwatch_log_group" "forwarder" {
  name              = "/ecs/${local.forwarder_name}"
  retention_in_days = var.nagare_log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "aggregator" {
  name              = "/ecs/${local.aggregator_name}"
  retention_in_days = var.nagare_log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "service" {
  for_each = toset(var.service_log_groups)

  name              = "${var.log_group_prefix}${each.value}"
  retention_in_days = var.service_log_retention_days
  tags              = var.tags
}

# ---- S3 bucket -----------------------------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = var.s3_bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket                  = aws_s3_bucket.logs[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Keys are never overwritten (create-only PutObject), so versioning costs nothing in steady
# state; it protects the archive against deletes and is required for replication.
resource "aws_s3_bucket_versioning" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.s3_kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.s3_kms_key_arn
    }
    bucket_key_enabled = var.s3_kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id

  rule {
    id     = "nagare-log-objects"
    status = "Enabled"

    filter {
      prefix = var.s3_prefix
    }

    dynamic "transition" {
      for_each = var.s3_infrequent_access_after_days > 0 ? [var.s3_infrequent_access_after_days] : []
      content {
        days          = transition.value
        storage_class = "STANDARD_IA"
      }
    }

    dynamic "transition" {
      for_each = var.s3_glacier_ir_after_days > 0 ? [var.s3_glacier_ir_after_days] : []
      content {
        days          = transition.value
        storage_class = "GLACIER_IR"
      }
    }

    dynamic "expiration" {
      for_each = var.s3_expire_after_days > 0 ? [var.s3_expire_after_days] : []
      content {
        days = expiration.value
      }
    }

    noncurrent_version_expiration {
      noncurrent_days = var.s3_noncurrent_expire_after_days
    }
  }

  # Multipart uploads Nagare could not complete or abort (a killed forwarder) are invisible and
  # billed until aborted: clean them up for the whole bucket.
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.bucket_arn,
      "${local.bucket_arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  count = var.create_bucket ? 1 : 0

  bucket = aws_s3_bucket.logs[0].id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

# ---- IAM -----------------------------------------------------------------------------------------

data "aws_iam_policy_document" "execution_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Task roles: only ECS tasks of this account and region (confused-deputy guard).
data "aws_iam_policy_document" "task_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name_prefix}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.execution_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  dynamic "statement" {
    for_each = length(var.image_repository_arns) > 0 ? [1] : []
    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = length(var.image_repository_arns) > 0 ? [1] : []
    content {
      sid = "PullNagareImages"
      actions = [
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
      ]
      resources = var.image_repository_arns
    }
  }

  statement {
    sid     = "NagareOwnLogsViaAwslogs"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      aws_cloudwatch_log_group.forwarder.arn,
      "${aws_cloudwatch_log_group.forwarder.arn}:*",
      aws_cloudwatch_log_group.aggregator.arn,
      "${aws_cloudwatch_log_group.aggregator.arn}:*",
    ]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "nagare-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "forwarder_task" {
  name               = "${local.forwarder_name}-task"
  assume_role_policy = data.aws_iam_policy_document.task_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "forwarder_task" {
  statement {
    sid       = "CreateLogObjects"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/${var.s3_prefix}*"]
  }

  # HeadObject after a 412: recognise an object an earlier attempt of the same chunk created
  # (its reply was lost) instead of writing a duplicate under the next index.
  statement {
    sid       = "RecogniseOwnObjectAfterLostReply"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/${var.s3_prefix}*"]
  }

  statement {
    sid       = "FindNextFreeIndex"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.s3_prefix}*"]
    }
  }

  dynamic "statement" {
    for_each = var.s3_kms_key_arn == null ? [] : [var.s3_kms_key_arn]
    content {
      sid       = "EncryptWithBucketKey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "forwarder_task" {
  name   = "nagare-forwarder-s3"
  role   = aws_iam_role.forwarder_task.id
  policy = data.aws_iam_policy_document.forwarder_task.json
}

resource "aws_iam_role" "aggregator_task" {
  name               = "${local.aggregator_name}-task"
  assume_role_policy = data.aws_iam_policy_document.task_trust.json
  tags               = var.tags
}

data "aws_iam_policy_document" "aggregator_task" {
  statement {
    sid       = "WriteEvents"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.group_arn]
  }

  statement {
    sid       = "CreateGroupsWithRetention"
    actions   = ["logs:CreateLogGroup", "logs:PutRetentionPolicy"]
    resources = [local.group_arn]
  }

  dynamic "statement" {
    for_each = var.allow_log_group_tagging ? [1] : []
    content {
      sid       = "TagGroupsOnCreate"
      actions   = ["logs:TagResource", "logs:TagLogGroup"]
      resources = [local.group_arn]
    }
  }
}

resource "aws_iam_role_policy" "aggregator_task" {
  name   = "nagare-aggregator-cloudwatch-logs"
  role   = aws_iam_role.aggregator_task.id
  policy = data.aws_iam_policy_document.aggregator_task.json
}

# ---- security groups -----------------------------------------------------------------------------

resource "aws_security_group" "nlb" {
  name_prefix = "${var.name_prefix}-nlb-"
  description = "Nagare aggregator NLB: forward protocol from the forwarders"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_forwarder_sgs" {
  for_each = toset(var.forwarder_source_security_group_ids)

  security_group_id            = aws_security_group.nlb.id
  description                  = "forward protocol from container instances"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.forward_port
  to_port                      = local.forward_port
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_cidrs" {
  for_each = toset(var.forwarder_source_cidrs)

  security_group_id = aws_security_group.nlb.id
  description       = "forward protocol from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.forward_port
  to_port           = local.forward_port
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_aggregator" {
  for_each = toset([tostring(local.forward_port), tostring(local.admin_port)])

  security_group_id            = aws_security_group.nlb.id
  description                  = "traffic and health checks to the aggregators"
  referenced_security_group_id = aws_security_group.aggregator.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_security_group" "aggregator" {
  name_prefix = "${var.name_prefix}-aggregator-"
  description = "Nagare aggregator tasks (awsvpc)"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = local.aggregator_name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "aggregator_from_nlb" {
  for_each = toset([tostring(local.forward_port), tostring(local.admin_port)])

  security_group_id            = aws_security_group.aggregator.id
  description                  = "forward protocol and /health from the NLB"
  referenced_security_group_id = aws_security_group.nlb.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_vpc_security_group_egress_rule" "aggregator_https" {
  security_group_id = aws_security_group.aggregator.id
  description       = "CloudWatch Logs and STS over HTTPS (or VPC endpoints)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# ---- NLB -----------------------------------------------------------------------------------------

resource "aws_lb" "aggregators" {
  name               = "${var.name_prefix}-aggregators"
  internal           = true
  load_balancer_type = "network"
  subnets            = var.nlb_subnet_ids
  security_groups    = [aws_security_group.nlb.id]

  # Aggregators are spread over AZs but an AZ can have none for a while (distinctInstance,
  # deployments): let every NLB node reach every healthy target. Cross-AZ traffic is billed.
  enable_cross_zone_load_balancing = true

  tags = var.tags
}

resource "aws_lb_target_group" "aggregators" {
  name        = "${var.name_prefix}-aggregators"
  port        = local.forward_port
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  # ECS waits this long (target "draining") before it sends SIGTERM to a stopping aggregator.
  deregistration_delay = var.deregistration_delay
  # Let Nagare close the connections itself (acks written, then FIN) instead of the NLB
  # resetting them at the end of the delay: a reset loses the ack of a committed chunk and the
  # forwarder sends it again to another aggregator (a duplicate).
  connection_termination = false
  # ip targets already default to false for TCP; explicit because with true a forwarder on the
  # same host as its target cannot connect through the NLB (no hairpinning).
  preserve_client_ip = "false"

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(local.admin_port)
    path                = "/health"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags
}

resource "aws_lb_listener" "forward" {
  load_balancer_arn        = aws_lb.aggregators.arn
  port                     = local.forward_port
  protocol                 = "TCP"
  tcp_idle_timeout_seconds = var.nlb_tcp_idle_timeout

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.aggregators.arn
  }

  tags = var.tags
}

# ---- task definitions ----------------------------------------------------------------------------

resource "aws_ecs_task_definition" "forwarder" {
  family                   = local.forwarder_name
  requires_compatibilities = ["EC2"]
  network_mode             = "host"
  task_role_arn            = aws_iam_role.forwarder_task.arn
  execution_role_arn       = aws_iam_role.execution.arn

  volume {
    name      = "nagare-data"
    host_path = "/var/lib/nagare"
  }

  container_definitions = jsonencode([
    {
      name                   = local.forwarder_name
      image                  = var.forwarder_image
      essential              = true
      cpu                    = var.forwarder_cpu
      memoryReservation      = var.forwarder_memory_reservation
      memory                 = var.forwarder_memory
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      ulimits                = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      portMappings = [
        { containerPort = local.forward_port, hostPort = local.forward_port, protocol = "tcp" },
        { containerPort = local.forward_port, hostPort = local.forward_port, protocol = "udp" },
        { containerPort = local.admin_port, hostPort = local.admin_port, protocol = "tcp" },
      ]
      environment = [
        { name = "AWS_REGION", value = local.region },
        { name = "NAGARE_S3_BUCKET", value = var.s3_bucket_name },
        { name = "NAGARE_S3_ENDPOINT", value = "" }, # empty: AWS S3 (default: the on-disk store)
        { name = "NAGARE_AGGREGATOR_HOST", value = aws_lb.aggregators.dns_name },
        { name = "NAGARE_AGGREGATOR_PORT", value = tostring(local.forward_port) },
        { name = "NAGARE_BIND", value = "0.0.0.0" },
        { name = "NAGARE_PORT", value = tostring(local.forward_port) },
        { name = "NAGARE_ADMIN_BIND", value = "127.0.0.1" },
        { name = "NAGARE_ADMIN_PORT", value = tostring(local.admin_port) },
        { name = "NAGARE_DATA_DIR", value = "/var/lib/nagare" },
      ]
      mountPoints = [
        { sourceVolume = "nagare-data", containerPath = "/var/lib/nagare", readOnly = false },
      ]
      # Liveness, not /health: a forwarder whose S3 or aggregators are down is not fixed by a
      # restart (which would also drop its memory buffers).
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/nagare-probe", "http://127.0.0.1:${local.admin_port}/api/plugins.json"]
        interval    = 30
        timeout     = 5
        retries     = 3
        startPeriod = 15
      }
      stopTimeout = var.stop_timeout
      dockerLabels = {
        "nagare.role"     = "forwarder"
        "nagare.shutdown" = local.shutdown_note
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.forwarder.name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = "nagare"
          "mode"                  = "non-blocking"
          "max-buffer-size"       = "4m"
        }
      }
    }
  ])

  tags = var.tags
}

resource "aws_ecs_task_definition" "aggregator" {
  family                   = local.aggregator_name
  requires_compatibilities = ["EC2"]
  network_mode             = "awsvpc"
  task_role_arn            = aws_iam_role.aggregator_task.arn
  execution_role_arn       = aws_iam_role.execution.arn

  # One aggregator per instance (distinctInstance below), so this directory is per task: a
  # replacement placed on the same host resumes its file buffers.
  volume {
    name      = "nagare-data"
    host_path = "/var/lib/nagare-aggregator"
  }

  container_definitions = jsonencode([
    {
      name                   = local.aggregator_name
      image                  = var.aggregator_image
      essential              = true
      cpu                    = var.aggregator_cpu
      memoryReservation      = var.aggregator_memory_reservation
      memory                 = var.aggregator_memory
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      ulimits                = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      portMappings = [
        { name = "forward", containerPort = local.forward_port, protocol = "tcp" },
        { name = "admin", containerPort = local.admin_port, protocol = "tcp" },
      ]
      environment = [
        { name = "AWS_REGION", value = local.region },
        { name = "NAGARE_BIND", value = "0.0.0.0" },
        { name = "NAGARE_PORT", value = tostring(local.forward_port) },
        { name = "NAGARE_ADMIN_BIND", value = "0.0.0.0" },
        { name = "NAGARE_ADMIN_PORT", value = tostring(local.admin_port) },
        { name = "NAGARE_DATA_DIR", value = "/var/lib/nagare" },
        # Group names under the prefix the task role's policy grants (log_group_name_prefix).
        { name = "NAGARE_LOG_GROUP_PREFIX", value = var.log_group_prefix },
      ]
      mountPoints = [
        { sourceVolume = "nagare-data", containerPath = "/var/lib/nagare", readOnly = false },
      ]
      stopTimeout = var.stop_timeout
      dockerLabels = {
        "nagare.role"     = "aggregator"
        "nagare.shutdown" = "NLB deregistration (${var.deregistration_delay}s) -> ${local.shutdown_note}"
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.aggregator.name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = "nagare"
          "mode"                  = "non-blocking"
          "max-buffer-size"       = "4m"
        }
      }
    }
  ])

  tags = var.tags
}

# ---- services ------------------------------------------------------------------------------------

resource "aws_ecs_service" "forwarder" {
  name                = local.forwarder_name
  cluster             = var.cluster_arn
  task_definition     = aws_ecs_task_definition.forwarder.arn
  launch_type         = "EC2"
  scheduling_strategy = "DAEMON"

  # Host networking: the old and the new forwarder cannot both bind :24224, so a deployment
  # stops the old one first. App containers using fluentd-async hold their lines meanwhile.
  deployment_maximum_percent         = 100
  deployment_minimum_healthy_percent = 0

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  tags                    = var.tags
}

resource "aws_ecs_service" "aggregator" {
  name            = local.aggregator_name
  cluster         = var.cluster_arn
  task_definition = aws_ecs_task_definition.aggregator.arn
  launch_type     = "EC2"
  desired_count   = var.aggregator_desired_count

  deployment_maximum_percent         = 200
  deployment_minimum_healthy_percent = 100
  health_check_grace_period_seconds  = var.aggregator_health_check_grace_period

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  placement_constraints {
    type = "distinctInstance"
  }

  ordered_placement_strategy {
    type  = "spread"
    field = "attribute:ecs.availability-zone"
  }

  network_configuration {
    subnets          = var.aggregator_subnet_ids
    security_groups  = [aws_security_group.aggregator.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.aggregators.arn
    container_name   = local.aggregator_name
    container_port   = local.forward_port
  }

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  tags                    = var.tags

  depends_on = [aws_lb_listener.forward, aws_iam_role_policy.aggregator_task]
}
