output "nlb_dns_name" {
  description = "Internal DNS name of the aggregator NLB: the forwarders' NAGARE_AGGREGATOR_HOST."
  value       = aws_lb.aggregators.dns_name
}

output "target_group_arn" {
  description = "Aggregator target group (TCP 24224, health check HTTP /health on 24220)."
  value       = aws_lb_target_group.aggregators.arn
}

output "forwarder_service_name" {
  description = "ECS service of the forwarder daemon."
  value       = aws_ecs_service.forwarder.name
}

output "aggregator_service_name" {
  description = "ECS service of the aggregators."
  value       = aws_ecs_service.aggregator.name
}

output "forwarder_task_definition_arn" {
  description = "Forwarder task definition revision."
  value       = aws_ecs_task_definition.forwarder.arn
}

output "aggregator_task_definition_arn" {
  description = "Aggregator task definition revision."
  value       = aws_ecs_task_definition.aggregator.arn
}

output "execution_role_arn" {
  description = "Task execution role (image pulls, awslogs). App task definitions can reuse it."
  value       = aws_iam_role.execution.arn
}

output "forwarder_task_role_arn" {
  description = "Forwarder task role (S3 under s3_prefix)."
  value       = aws_iam_role.forwarder_task.arn
}

output "aggregator_task_role_arn" {
  description = "Aggregator task role (CloudWatch Logs under log_group_prefix)."
  value       = aws_iam_role.aggregator_task.arn
}

output "aggregator_security_group_id" {
  description = "Security group of the aggregator tasks."
  value       = aws_security_group.aggregator.id
}

output "nlb_security_group_id" {
  description = "Security group of the NLB (add ingress rules here for more forwarder sources)."
  value       = aws_security_group.nlb.id
}

output "bucket_name" {
  description = "Bucket the forwarders write to."
  value       = var.s3_bucket_name
}

output "nagare_log_group_names" {
  description = "Log groups of Nagare's own stderr."
  value       = [aws_cloudwatch_log_group.forwarder.name, aws_cloudwatch_log_group.aggregator.name]
}
