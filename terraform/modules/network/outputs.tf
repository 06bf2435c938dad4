output "vpc_id" {
  description = "VPC id (created or given)."
  value       = local.vpc_id
}

output "vpc_cidr" {
  description = "VPC CIDR block."
  value       = local.vpc_cidr
}

output "private_subnet_ids" {
  description = "Private subnet ids, one per availability zone."
  value       = local.subnet_ids
}

output "pgbouncer_security_group_id" {
  description = "Security group of the PgBouncer hosts."
  value       = aws_security_group.pgbouncer.id
}

output "ops_security_group_id" {
  description = "Security group of the ops and backup host."
  value       = aws_security_group.ops.id
}

output "rds_security_group_id" {
  description = "Security group of the RDS instance."
  value       = aws_security_group.rds.id
}
