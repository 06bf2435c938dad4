output "hosts" {
  description = "PgBouncer hosts by name: instance id, private IP, availability zone."
  value = {
    for name, i in aws_instance.this : name => {
      id                = i.id
      private_ip        = i.private_ip
      availability_zone = i.availability_zone
    }
  }
}

output "nlb_dns_name" {
  description = "DNS name of the internal NLB: the address the application connects to."
  value       = aws_lb.this.dns_name
}

output "nlb_arn" {
  description = "ARN of the network load balancer."
  value       = aws_lb.this.arn
}

output "port" {
  description = "PgBouncer port behind the NLB."
  value       = var.port
}

output "role_name" {
  description = "IAM role of the PgBouncer hosts."
  value       = aws_iam_role.this.name
}

output "instance_ids" {
  description = "Instance ids by host name (the SSM targets of amazon.aws.aws_ssm)."
  value       = { for name, i in aws_instance.this : name => i.id }
}

output "health_check" {
  description = "The NLB health check the hosts must answer: port, path and the status that means healthy."
  value = {
    port    = var.pgbouncer_health_port
    path    = var.pgbouncer_health_path
    matcher = "200"
  }
}

output "alarm_arns" {
  description = "CloudWatch alarm ARNs by name (<host>-status-check, <name>-pgbouncer-unhealthy-hosts, <name>-pgbouncer-no-healthy-hosts)."
  value = merge(
    { for k, a in aws_cloudwatch_metric_alarm.status_check : a.alarm_name => a.arn },
    { for k, a in aws_cloudwatch_metric_alarm.target_group : a.alarm_name => a.arn },
  )
}
