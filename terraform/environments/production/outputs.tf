# Every output of module "tier", passed through under the same name: `terraform output -json`
# is what inventories/terraform_inventory.py reads (ansible_inventory) and what people look at.

output "ansible_inventory" {
  description = "Groups, hosts and the variables of the Ansible inventory (inventories/terraform_inventory.py)."
  value       = module.tier.ansible_inventory
}

output "region" {
  description = "Primary region (RDS, hosts, primary backup bucket, SSM)."
  value       = module.tier.region
}

output "dr_region" {
  description = "DR region (replica bucket and key)."
  value       = module.tier.dr_region
}

output "rds_endpoint" {
  description = "RDS address:port (PgBouncer's upstream)."
  value       = module.tier.rds_endpoint
}

output "postgresql_major" {
  description = "PostgreSQL major version of RDS (the client tools follow it)."
  value       = module.tier.postgresql_major
}

output "rds_restore_instance_prefix" {
  description = "Point-in-time restores must be named with this prefix (`dbtier restore rds --new-instance <prefix>1`): the only names the ops host may create."
  value       = module.tier.rds_restore_instance_prefix
}

output "pgbouncer_endpoint" {
  description = "The address applications connect to (internal NLB)."
  value       = module.tier.pgbouncer_endpoint
}

output "pgbouncer_health_check" {
  description = "What the NLB checks on every PgBouncer host: HTTP port, path, expected status."
  value       = module.tier.pgbouncer_health_check
}

output "backup_bucket" {
  description = "Primary backup bucket."
  value       = module.tier.backup_bucket
}

output "backup_dr_bucket" {
  description = "DR backup bucket."
  value       = module.tier.backup_dr_bucket
}

output "dr_repository" {
  description = "dbtier's DR repository, s3://<DR bucket>/<prefix> (in dr_region)."
  value       = module.tier.dr_repository
}

output "backup_retention_days" {
  description = "dbtier's retention in days (Ansible: dbtier_retention_days); the S3 lifecycle keeps objects longer."
  value       = module.tier.backup_retention_days
}

output "backup_expiration_days" {
  description = "Days after which S3 expires backup objects."
  value       = module.tier.backup_expiration_days
}

output "alerts_sns_topic_arn" {
  description = "SNS topic every CloudWatch alarm and Alertmanager notify (<name>-alerts, KMS-encrypted); subscribe people and paging services to it."
  value       = module.tier.alerts_sns_topic_arn
}

output "ops_role_arn" {
  description = "IAM role of the ops and backup host."
  value       = module.tier.ops_role_arn
}

output "instance_ids" {
  description = "EC2 instance ids by host name (PgBouncer hosts and the ops host): the SSM session targets."
  value       = module.tier.instance_ids
}

output "ssm_bucket" {
  description = "File-transfer bucket of the amazon.aws.aws_ssm connection (ansible_aws_ssm_bucket_name)."
  value       = module.tier.ssm_bucket
}

output "ansible_controller_policy_arn" {
  description = "IAM policy to attach to whoever runs ansible-playbook: SSM sessions to these hosts, the transfer bucket and its key."
  value       = module.tier.ansible_controller_policy_arn
}

output "vpc_id" {
  description = "VPC of the tier."
  value       = module.tier.vpc_id
}

output "vpc_cidr" {
  description = "CIDR of the VPC."
  value       = module.tier.vpc_cidr
}

output "private_subnet_cidrs" {
  description = "CIDRs of the private subnets (PgBouncer and ops hosts): Ansible's postgresql_allowed_cidrs."
  value       = module.tier.private_subnet_cidrs
}

output "nat_gateway_ids" {
  description = "NAT gateways (empty unless enable_nat_gateway)."
  value       = module.tier.nat_gateway_ids
}
