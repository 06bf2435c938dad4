# The tier is composed once, in terraform/modules/tier; this environment gives it its values
# (terraform.tfvars), its providers (providers.tf) and its state (versions.tf, backend.hcl).
# Variables left out of terraform.tfvars are null here and take the module's defaults.

module "tier" {
  source = "../../modules/tier"

  providers = {
    aws    = aws
    aws.dr = aws.dr
  }

  environment = var.environment
  project     = var.project
  tags        = local.tags

  availability_zones   = var.availability_zones
  vpc_cidr             = var.vpc_cidr
  private_subnet_cidrs = var.private_subnet_cidrs
  app_cidr_blocks      = var.app_cidr_blocks
  enable_nat_gateway   = var.enable_nat_gateway
  public_subnet_cidrs  = var.public_subnet_cidrs

  db_engine_version              = var.db_engine_version
  db_allow_major_version_upgrade = var.db_allow_major_version_upgrade
  db_instance_class              = var.db_instance_class
  db_allocated_storage           = var.db_allocated_storage
  db_max_allocated_storage       = var.db_max_allocated_storage
  db_name                        = var.db_name
  db_multi_az                    = var.db_multi_az
  db_backup_retention_days       = var.db_backup_retention_days
  db_deletion_protection         = var.db_deletion_protection
  db_skip_final_snapshot         = var.db_skip_final_snapshot
  db_performance_insights        = var.db_performance_insights
  db_monitoring_interval         = var.db_monitoring_interval
  alarm_sns_topic_arns           = var.alarm_sns_topic_arns
  alert_email_addresses          = var.alert_email_addresses

  backup_bucket_name                = var.backup_bucket_name
  backup_dr_bucket_name             = var.backup_dr_bucket_name
  backup_prefix                     = var.backup_prefix
  backup_retention_days             = var.backup_retention_days
  backup_retention_margin_days      = var.backup_retention_margin_days
  backup_expiration_days            = var.backup_expiration_days
  backup_noncurrent_expiration_days = var.backup_noncurrent_expiration_days
  backup_force_destroy              = var.backup_force_destroy

  ami_id                  = var.ami_id
  pgbouncer_count         = var.pgbouncer_count
  pgbouncer_instance_type = var.pgbouncer_instance_type
  pgbouncer_health_port   = var.pgbouncer_health_port
  pgbouncer_health_path   = var.pgbouncer_health_path
  ops_instance_type       = var.ops_instance_type
  ssh_key_name            = var.ssh_key_name
  detailed_monitoring     = var.detailed_monitoring
  nlb_deletion_protection = var.nlb_deletion_protection

  ssm_bucket_name    = var.ssm_bucket_name
  ansible_connection = var.ansible_connection
  ansible_user       = var.ansible_user
}

# The modules used to be called from here directly: keep their state (RDS, buckets, hosts) where
# it is instead of destroying and recreating them under module.tier.
moved {
  from = module.network
  to   = module.tier.module.network
}

moved {
  from = module.backup_buckets
  to   = module.tier.module.backup_buckets
}

moved {
  from = module.rds
  to   = module.tier.module.rds
}

moved {
  from = module.iam
  to   = module.tier.module.iam
}

moved {
  from = module.pgbouncer_hosts
  to   = module.tier.module.pgbouncer_hosts
}

moved {
  from = module.ops_host
  to   = module.tier.module.ops_host
}
