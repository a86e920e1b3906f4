# ---- where ------------------------------------------------------------------------------------

variable "name_prefix" {
  description = "Prefix of every resource name (roles, services, task families, NLB, log groups)."
  type        = string
  default     = "nagare"
}

variable "cluster_arn" {
  description = "ARN of the existing ECS cluster (EC2 capacity) that runs the forwarder daemon and the aggregators."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "aggregator_subnet_ids" {
  description = "Private subnets for the aggregator tasks (awsvpc: one ENI per task). Use the same AZs as nlb_subnet_ids."
  type        = list(string)
}

variable "nlb_subnet_ids" {
  description = "Private subnets for the internal NLB, one per AZ the forwarders run in."
  type        = list(string)
}

variable "forwarder_source_security_group_ids" {
  description = "Security groups of the container instances (the forwarders run with host networking, so their traffic comes from the instances). Allowed to reach the NLB on 24224."
  type        = list(string)
  default     = []
}

variable "forwarder_source_cidrs" {
  description = "CIDR blocks allowed to reach the NLB on 24224, in addition to forwarder_source_security_group_ids."
  type        = list(string)
  default     = []
}

# ---- images and sizing --------------------------------------------------------------------------

variable "forwarder_image" {
  description = "nagare-forwarder image (deploy/docker/forwarder.Dockerfile), e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/nagare-forwarder:0.1.0."
  type        = string
}

variable "aggregator_image" {
  description = "nagare-aggregator image (deploy/docker/aggregator.Dockerfile)."
  type        = string
}

variable "image_repository_arns" {
  description = "ECR repositories the execution role may pull from. Empty: no ECR statements (images from a public registry)."
  type        = list(string)
  default     = []
}

variable "forwarder_cpu" {
  description = "CPU units reserved for the forwarder on every instance (1024 = one vCPU). Measured cost: about 5-6 CPU-seconds per million events at gzip level 6 (docs/benchmarks.md)."
  type        = number
  default     = 256
}

variable "forwarder_memory_reservation" {
  description = "Soft memory reservation of the forwarder, MiB (what ECS schedules against)."
  type        = number
  default     = 256
}

variable "forwarder_memory" {
  description = "Hard memory limit of the forwarder, MiB. Keep it above the sum of the pipeline's memory buffers' total_limit_size plus about 64 MiB (deploy/README.md, Sizing)."
  type        = number
  default     = 1024
}

variable "aggregator_cpu" {
  description = "CPU units of one aggregator task."
  type        = number
  default     = 1024
}

variable "aggregator_memory_reservation" {
  description = "Soft memory reservation of one aggregator, MiB."
  type        = number
  default     = 512
}

variable "aggregator_memory" {
  description = "Hard memory limit of one aggregator, MiB."
  type        = number
  default     = 1024
}

variable "aggregator_desired_count" {
  description = "Aggregator tasks. With the distinctInstance constraint, at most one per container instance."
  type        = number
  default     = 2
}

# ---- behaviour ----------------------------------------------------------------------------------

variable "stop_timeout" {
  description = "ECS stopTimeout (seconds between SIGTERM and SIGKILL). Must exceed shutdown_accept_period + shutdown_drain_timeout (5 s + 20 s in deploy/config)."
  type        = number
  default     = 30

  validation {
    condition     = var.stop_timeout >= 26 && var.stop_timeout <= 120
    error_message = "stop_timeout must leave room for the 25 s shutdown (26..120 s; ECS allows at most 120)."
  }
}

variable "deregistration_delay" {
  description = "NLB deregistration delay, seconds. ECS sends SIGTERM only after it, so it adds to every aggregator stop. At least the forwarders' ack_response_timeout (30 s in examples/forwarder.conf), so a chunk sent just before deregistration is acked by the old target."
  type        = number
  default     = 30
}

variable "nlb_tcp_idle_timeout" {
  description = "NLB TCP idle timeout, seconds (60..6000; AWS default 350). Keep it above the forwarders' keepalive_timeout / keepalive_max_age (5 min in examples/forwarder.conf) so the NLB never silently drops a kept-alive connection."
  type        = number
  default     = 350
}

variable "aggregator_health_check_grace_period" {
  description = "Seconds ECS ignores a failing NLB health check after an aggregator starts."
  type        = number
  default     = 30
}

variable "nagare_log_retention_days" {
  description = "Retention of Nagare's own stderr (/ecs/<name_prefix>-forwarder and -aggregator)."
  type        = number
  default     = 30
}

# ---- S3 -----------------------------------------------------------------------------------------

variable "create_bucket" {
  description = "Create the S3 bucket (versioning, encryption, lifecycle). False: use an existing bucket named s3_bucket_name and manage it elsewhere."
  type        = bool
  default     = true
}

variable "s3_bucket_name" {
  description = "Bucket the forwarders write to (NAGARE_S3_BUCKET)."
  type        = string
}

variable "s3_prefix" {
  description = "Key prefix the forwarders write under (the pipeline's S3 path starts with it). Scopes the IAM policy and the lifecycle rule."
  type        = string
  default     = "applications/"
}

variable "s3_kms_key_arn" {
  description = "KMS key for default bucket encryption (SSE-KMS) and the forwarder role's kms:GenerateDataKey. Null: SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "s3_infrequent_access_after_days" {
  description = "Move log objects to STANDARD_IA after this many days (0 disables). S3 does not transition objects under 128 KiB by default."
  type        = number
  default     = 30
}

variable "s3_glacier_ir_after_days" {
  description = "Move log objects to GLACIER_IR after this many days (0 disables)."
  type        = number
  default     = 90
}

variable "s3_expire_after_days" {
  description = "Delete log objects after this many days (0 keeps them forever)."
  type        = number
  default     = 400
}

variable "s3_noncurrent_expire_after_days" {
  description = "Delete noncurrent versions (left by deletes or by a lifecycle expiration) after this many days."
  type        = number
  default     = 30
}

# ---- CloudWatch Logs ----------------------------------------------------------------------------

variable "log_group_prefix" {
  description = "Prefix of every log group the aggregators write (scopes their IAM policy). The pipeline must produce names under it (deploy/iam/README.md). Empty string: any group."
  type        = string
  default     = "/app/"
}

variable "service_log_groups" {
  description = "Services whose log groups (<log_group_prefix><service>) Terraform creates with service_log_retention_days. Groups not listed are created by the aggregators (auto_create_stream) with the pipeline's retention_in_days."
  type        = list(string)
  default     = []
}

variable "service_log_retention_days" {
  description = "Retention of the pre-created service log groups."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.service_log_retention_days)
    error_message = "CloudWatch Logs accepts only 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653 days."
  }
}

variable "allow_log_group_tagging" {
  description = "Grant logs:TagResource/TagLogGroup on the prefix (needed only with log_group_aws_tags in the pipeline)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
