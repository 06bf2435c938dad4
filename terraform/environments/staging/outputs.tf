# `ansible_inventory` is the contract with inventories/terraform_inventory.py: groups and the
# variables the Ansible roles read. The other outputs are for people.

output "ansible_inventory" {
  description = "Groups, hosts and dbtier_* variables for the Ansible inventory source."
  value = {
    groups = {
      # RDS is managed: no self-managed PostgreSQL hosts in this environment.
      postgresql = {}
      pgbouncer = {
        for name, h in module.pgbouncer_hosts.hosts : name => {
          ansible_host          = h.private_ip
          ec2_instance_id       = h.id
          ec2_availability_zone = h.availability_zone
        }
      }
      ops = {
        (module.ops_host.host.name) = {
          ansible_host          = module.ops_host.host.private_ip
          ec2_instance_id       = module.ops_host.host.id
          ec2_availability_zone = module.ops_host.host.availability_zone
        }
      }
    }
    vars = {
      ansible_user                = var.ansible_user
      dbtier_environment          = var.environment
      dbtier_db_host              = module.rds.address
      dbtier_db_port              = module.rds.port
      dbtier_db_name              = module.rds.db_name
      dbtier_db_instance_id       = module.rds.identifier
      dbtier_db_master_secret_arn = module.rds.master_user_secret_arn
      dbtier_backup_bucket        = module.backup_buckets.bucket
      dbtier_backup_dr_bucket     = module.backup_buckets.dr_bucket
      dbtier_backup_region        = module.backup_buckets.region
      dbtier_dr_region            = module.backup_buckets.dr_region
      dbtier_backup_prefix        = var.backup_prefix
      dbtier_kms_key_id           = module.backup_buckets.kms_key_arn
      dbtier_pgbouncer_endpoint   = module.pgbouncer_hosts.nlb_dns_name
      dbtier_pgbouncer_port       = module.pgbouncer_hosts.port
    }
  }
}

output "rds_endpoint" {
  description = "RDS address:port (PgBouncer's upstream)."
  value       = "${module.rds.address}:${module.rds.port}"
}

output "pgbouncer_endpoint" {
  description = "The address applications connect to (internal NLB)."
  value       = "${module.pgbouncer_hosts.nlb_dns_name}:${module.pgbouncer_hosts.port}"
}

output "backup_bucket" {
  description = "Primary backup bucket."
  value       = module.backup_buckets.bucket
}

output "backup_dr_bucket" {
  description = "DR backup bucket."
  value       = module.backup_buckets.dr_bucket
}

output "ops_role_arn" {
  description = "IAM role of the ops and backup host."
  value       = module.iam.role_arn
}
