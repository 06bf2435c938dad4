locals {
  name = "${var.project}-${var.environment}"
  tags = merge(var.extra_tags, {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
  })
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id
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
  source = "../../modules/network"

  name                 = local.name
  vpc_cidr             = var.vpc_cidr
  availability_zones   = var.availability_zones
  private_subnet_cidrs = var.private_subnet_cidrs
  app_cidr_blocks      = var.app_cidr_blocks
  tags                 = local.tags
}

module "backup_buckets" {
  source = "../../modules/backup_buckets"

  providers = {
    aws    = aws
    aws.dr = aws.dr
  }

  bucket_name    = var.backup_bucket_name
  dr_bucket_name = var.backup_dr_bucket_name
  retention_days = var.backup_retention_days
  force_destroy  = var.backup_force_destroy
  tags           = local.tags
}

module "rds" {
  source = "../../modules/rds"

  identifier                   = local.name
  engine_version               = var.db_engine_version
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
  alarm_actions                = var.alarm_sns_topic_arns
  tags                         = local.tags
}

module "iam" {
  source = "../../modules/iam"

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
  tags                     = local.tags
}

module "pgbouncer_hosts" {
  source = "../../modules/pgbouncer_hosts"

  name                    = local.name
  instance_count          = var.pgbouncer_count
  instance_type           = var.pgbouncer_instance_type
  ami_id                  = local.ami_id
  vpc_id                  = module.network.vpc_id
  subnet_ids              = module.network.private_subnet_ids
  security_group_ids      = [module.network.pgbouncer_security_group_id]
  ssh_key_name            = var.ssh_key_name
  detailed_monitoring     = var.detailed_monitoring
  nlb_deletion_protection = var.nlb_deletion_protection
  tags                    = local.tags
}

module "ops_host" {
  source = "../../modules/ops_host"

  name                  = "${local.name}-ops"
  instance_type         = var.ops_instance_type
  ami_id                = local.ami_id
  subnet_id             = module.network.private_subnet_ids[0]
  security_group_ids    = [module.network.ops_security_group_id]
  instance_profile_name = module.iam.instance_profile_name
  ssh_key_name          = var.ssh_key_name
  detailed_monitoring   = var.detailed_monitoring
  tags                  = local.tags
}
