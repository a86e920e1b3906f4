terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # tcp_idle_timeout_seconds on aws_lb_listener needs a recent 5.x provider.
      version = ">= 5.91.0"
    }
  }
}
