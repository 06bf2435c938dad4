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

output "private_subnet_cidrs" {
  description = "CIDR blocks of the private subnets (where PgBouncer and the ops host live)."
  value       = local.subnet_cidrs
}

output "private_route_table_ids" {
  description = "Route tables of the private subnets (create_vpc only; empty otherwise)."
  value       = aws_route_table.private[*].id
}

output "s3_endpoint_id" {
  description = "Gateway VPC endpoint of S3 (create_vpc only; null otherwise)."
  value       = try(aws_vpc_endpoint.s3[0].id, null)
}

output "interface_endpoint_ids" {
  description = "Interface VPC endpoints by service name."
  value       = { for k, e in aws_vpc_endpoint.interface : k => e.id }
}

output "nat_gateway_ids" {
  description = "NAT gateways (empty unless enable_nat_gateway)."
  value       = aws_nat_gateway.this[*].id
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
