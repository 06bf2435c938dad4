# The database tier, composed once: network, RDS, backup buckets, PgBouncer hosts, the ops host
# and its role, SSM access for Ansible. The environments (terraform/environments/<env>) only hold
# their backend, providers and values.

locals {
  name   = "${var.project}-${var.environment}"
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id

  # every CloudWatch alarm of the tier notifies its alert topic, and any extra topics given
  alarm_actions = distinct(concat([module.alerting.topic_arn], var.alarm_sns_topic_arns))
}

data "aws_ami" "debian" {
  count = var.ami_id == null ? 1 : 0

  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

module "network" {
  source = "../network"

  name                  = local.name
  vpc_cidr              = var.vpc_cidr
  availability_zones    = var.availability_zones
  private_subnet_cidrs  = var.private_subnet_cidrs
  app_cidr_blocks       = var.app_cidr_blocks
  enable_nat_gateway    = var.enable_nat_gateway
  public_subnet_cidrs   = var.public_subnet_cidrs
  pgbouncer_health_port = var.pgbouncer_health_port
  node_exporter_port    = var.node_exporter_port
  tags                  = var.tags
}

module "alerting" {
  source = "../alerting"

  name            = local.name
  email_addresses = var.alert_email_addresses
  tags            = var.tags
}

module "backup_buckets" {
  source = "../backup_buckets"

  providers = {
    aws    = aws
    aws.dr = aws.dr
  }

  bucket_name                        = var.backup_bucket_name
  dr_bucket_name                     = var.backup_dr_bucket_name
  backup_retention_days              = var.backup_retention_days
  retention_margin_days              = var.backup_retention_margin_days
  expiration_days                    = var.backup_expiration_days
  noncurrent_version_expiration_days = coalesce(var.backup_noncurrent_expiration_days, var.backup_expiration_days)
  multi_region_key                   = var.backup_multi_region_key
  force_destroy                      = var.backup_force_destroy
  tags                               = var.tags
}

module "rds" {
  source = "../rds"

  identifier                   = local.name
  engine_version               = var.db_engine_version
  allow_major_version_upgrade  = var.db_allow_major_version_upgrade
  instance_class               = var.db_instance_class
  allocated_storage            = var.db_allocated_storage
  max_allocated_storage        = var.db_max_allocated_storage
  db_name                      = var.db_name
  multi_az                     = var.db_multi_az
  backup_retention_period      = var.db_backup_retention_days
  deletion_protection          = var.db_deletion_protection
  skip_final_snapshot          = var.db_skip_final_snapshot
  performance_insights_enabled = var.db_performance_insights
  monitoring_interval          = var.db_monitoring_interval
  subnet_ids                   = module.network.private_subnet_ids
  security_group_ids           = [module.network.rds_security_group_id]
  alarm_actions                = local.alarm_actions
  tags                         = var.tags
}

module "iam" {
  source = "../iam"

  name                     = local.name
  backup_bucket_arn        = module.backup_buckets.bucket_arn
  dr_bucket_arn            = module.backup_buckets.dr_bucket_arn
  object_prefixes          = [var.backup_prefix]
  backup_kms_key_arns      = [module.backup_buckets.kms_key_arn, module.backup_buckets.dr_kms_key_arn]
  rds_instance_arn         = module.rds.arn
  rds_kms_key_arn          = module.rds.kms_key_arn
  rds_subnet_group_name    = module.rds.subnet_group_name
  rds_parameter_group_name = module.rds.parameter_group_name
  secret_arns              = compact([module.rds.master_user_secret_arn])
  alerts_sns_topic_arn     = module.alerting.topic_arn
  alerts_kms_key_arn       = module.alerting.kms_key_arn
  ssm_session_manager      = true
  tags                     = var.tags
}

module "pgbouncer_hosts" {
  source = "../pgbouncer_hosts"

  name                    = local.name
  instance_count          = var.pgbouncer_count
  instance_type           = var.pgbouncer_instance_type
  ami_id                  = local.ami_id
  vpc_id                  = module.network.vpc_id
  subnet_ids              = module.network.private_subnet_ids
  security_group_ids      = [module.network.pgbouncer_security_group_id]
  pgbouncer_health_port   = var.pgbouncer_health_port
  pgbouncer_health_path   = var.pgbouncer_health_path
  ssm_session_manager     = true
  ssh_key_name            = var.ssh_key_name
  detailed_monitoring     = var.detailed_monitoring
  nlb_deletion_protection = var.nlb_deletion_protection
  alarm_actions           = local.alarm_actions
  tags                    = var.tags
}

module "ops_host" {
  source = "../ops_host"

  name                  = "${local.name}-ops"
  instance_type         = var.ops_instance_type
  ami_id                = local.ami_id
  subnet_id             = module.network.private_subnet_ids[0]
  security_group_ids    = [module.network.ops_security_group_id]
  instance_profile_name = module.iam.instance_profile_name
  ssh_key_name          = var.ssh_key_name
  detailed_monitoring   = var.detailed_monitoring
  alarm_actions         = local.alarm_actions
  tags                  = var.tags
}

module "ssm_access" {
  source = "../ssm_access"

  name         = local.name
  bucket_name  = var.ssm_bucket_name
  instance_ids = concat(values(module.pgbouncer_hosts.instance_ids), [module.ops_host.host.id])
  tags         = var.tags
}
