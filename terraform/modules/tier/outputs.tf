# `ansible_inventory` is the contract with inventories/terraform_inventory.py: groups and the
# variables the Ansible roles read. The environments pass every output through unchanged.

locals {
  host_vars = {
    for name, h in module.pgbouncer_hosts.hosts : name => {
      ansible_host                = h.private_ip
      ansible_aws_ssm_instance_id = h.id
      ec2_instance_id             = h.id
      ec2_availability_zone       = h.availability_zone
    }
  }
  dr_repository = "s3://${module.backup_buckets.dr_bucket}/${var.backup_prefix}"
}

output "ansible_inventory" {
  description = "Groups, hosts and the variables of the Ansible inventory (inventories/terraform_inventory.py)."
  value = {
    groups = {
      # RDS is managed: no self-managed PostgreSQL hosts in these environments.
      postgresql = {}
      pgbouncer  = local.host_vars
      ops = {
        (module.ops_host.host.name) = {
          ansible_host                = module.ops_host.host.private_ip
          ansible_aws_ssm_instance_id = module.ops_host.host.id
          ec2_instance_id             = module.ops_host.host.id
          ec2_availability_zone       = module.ops_host.host.availability_zone
        }
      }
    }
    vars = {
      # how Ansible connects: SSM Session Manager, files through the transfer bucket
      ansible_user                = var.ansible_user
      ansible_connection          = var.ansible_connection
      ansible_aws_ssm_bucket_name = module.ssm_access.bucket
      ansible_aws_ssm_region      = module.ssm_access.region

      dbtier_environment          = var.environment
      dbtier_db_host              = module.rds.address
      dbtier_db_port              = module.rds.port
      dbtier_db_name              = module.rds.db_name
      dbtier_db_instance_id       = module.rds.identifier
      dbtier_db_master_secret_arn = module.rds.master_user_secret_arn
      dbtier_postgresql_major     = module.rds.engine_major
      dbtier_rds_restore_prefix   = module.iam.restore_instance_prefix

      dbtier_backup_bucket    = module.backup_buckets.bucket
      dbtier_backup_dr_bucket = module.backup_buckets.dr_bucket
      dbtier_backup_region    = module.backup_buckets.region
      dbtier_dr_region        = module.backup_buckets.dr_region
      dbtier_backup_prefix    = var.backup_prefix
      dbtier_kms_key_id       = module.backup_buckets.kms_key_arn
      dbtier_retention_days   = module.backup_buckets.backup_retention_days

      # DR repository: the replica bucket; S3 replication fills it, dbtier checks it
      dbtier_secondary_repository        = local.dr_repository
      dbtier_secondary_region            = module.backup_buckets.dr_region
      dbtier_secondary_check_replication = true

      dbtier_pgbouncer_endpoint = module.pgbouncer_hosts.nlb_dns_name
      dbtier_pgbouncer_port     = module.pgbouncer_hosts.port
      pgbouncer_health_port     = module.pgbouncer_hosts.health_check.port
      pgbouncer_health_path     = module.pgbouncer_hosts.health_check.path

      # monitoring: Alertmanager's SNS receiver, the port the security groups open for scrapes
      dbtier_alerts_sns_topic_arn   = module.alerting.topic_arn
      monitoring_node_exporter_port = var.node_exporter_port

      dbtier_vpc_cidr          = module.network.vpc_cidr
      postgresql_allowed_cidrs = module.network.private_subnet_cidrs
    }
  }
}

output "region" {
  description = "Primary region (RDS, hosts, primary backup bucket, SSM)."
  value       = module.backup_buckets.region
}

output "dr_region" {
  description = "DR region (replica bucket and key)."
  value       = module.backup_buckets.dr_region
}

output "rds_endpoint" {
  description = "RDS address:port (PgBouncer's upstream)."
  value       = "${module.rds.address}:${module.rds.port}"
}

output "postgresql_major" {
  description = "PostgreSQL major version of RDS (the client tools follow it)."
  value       = module.rds.engine_major
}

output "rds_restore_instance_prefix" {
  description = "Point-in-time restores must be named with this prefix (`dbtier restore rds --new-instance <prefix>1`): the only names the ops host may create."
  value       = module.iam.restore_instance_prefix
}

output "pgbouncer_endpoint" {
  description = "The address applications connect to (internal NLB)."
  value       = "${module.pgbouncer_hosts.nlb_dns_name}:${module.pgbouncer_hosts.port}"
}

output "pgbouncer_health_check" {
  description = "What the NLB checks on every PgBouncer host: HTTP port, path, expected status."
  value       = module.pgbouncer_hosts.health_check
}

output "backup_bucket" {
  description = "Primary backup bucket."
  value       = module.backup_buckets.bucket
}

output "backup_dr_bucket" {
  description = "DR backup bucket."
  value       = module.backup_buckets.dr_bucket
}

output "dr_repository" {
  description = "dbtier's DR repository, s3://<DR bucket>/<prefix> (in dr_region)."
  value       = local.dr_repository
}

output "backup_retention_days" {
  description = "dbtier's retention in days (Ansible: dbtier_retention_days); the S3 lifecycle keeps objects longer."
  value       = module.backup_buckets.backup_retention_days
}

output "backup_expiration_days" {
  description = "Days after which S3 expires backup objects."
  value       = module.backup_buckets.expiration_days
}

output "alerts_sns_topic_arn" {
  description = "SNS topic every CloudWatch alarm and Alertmanager notify (<name>-alerts, KMS-encrypted); subscribe people and paging services to it."
  value       = module.alerting.topic_arn
}

output "ops_role_arn" {
  description = "IAM role of the ops and backup host."
  value       = module.iam.role_arn
}

output "instance_ids" {
  description = "EC2 instance ids by host name (PgBouncer hosts and the ops host): the SSM session targets."
  value       = merge(module.pgbouncer_hosts.instance_ids, { (module.ops_host.host.name) = module.ops_host.host.id })
}

output "ssm_bucket" {
  description = "File-transfer bucket of the amazon.aws.aws_ssm connection (ansible_aws_ssm_bucket_name)."
  value       = module.ssm_access.bucket
}

output "ansible_controller_policy_arn" {
  description = "IAM policy to attach to whoever runs ansible-playbook: SSM sessions to these hosts, the transfer bucket and its key."
  value       = module.ssm_access.controller_policy_arn
}

output "vpc_id" {
  description = "VPC of the tier."
  value       = module.network.vpc_id
}

output "vpc_cidr" {
  description = "CIDR of the VPC."
  value       = module.network.vpc_cidr
}

output "private_subnet_cidrs" {
  description = "CIDRs of the private subnets (PgBouncer and ops hosts): Ansible's postgresql_allowed_cidrs."
  value       = module.network.private_subnet_cidrs
}

output "nat_gateway_ids" {
  description = "NAT gateways (empty unless enable_nat_gateway)."
  value       = module.network.nat_gateway_ids
}
