output "identifier" {
  description = "RDS instance identifier (the source of a point-in-time restore)."
  value       = aws_db_instance.this.identifier
}

output "engine_major" {
  description = "PostgreSQL major version of the engine (a number, e.g. 15): the client tools (pg_dump, pg_restore) must follow it."
  value       = tonumber(local.major)
}

output "arn" {
  description = "RDS instance ARN."
  value       = aws_db_instance.this.arn
}

output "address" {
  description = "Hostname of the instance endpoint."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "db_name" {
  description = "Application database name."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "Master user name."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "Secrets Manager ARN holding the master password (managed by RDS)."
  value       = try(aws_db_instance.this.master_user_secret[0].secret_arn, null)
}

output "kms_key_arn" {
  description = "KMS key encrypting storage and Performance Insights."
  value       = local.kms_key_arn
}

output "subnet_group_name" {
  description = "DB subnet group name (reused by point-in-time restores)."
  value       = aws_db_subnet_group.this.name
}

output "parameter_group_name" {
  description = "DB parameter group name (reused by point-in-time restores)."
  value       = aws_db_parameter_group.this.name
}

output "alarm_arns" {
  description = "CloudWatch alarm ARNs by name (cpu, free-storage, connections)."
  value       = { for k, a in aws_cloudwatch_metric_alarm.this : k => a.arn }
}
