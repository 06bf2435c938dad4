locals {
  major       = split(".", var.engine_version)[0]
  family      = "postgres${local.major}"
  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : aws_kms_key.this[0].arn

  # pg_stat_statements must be preloaded (restart); the rest apply at once. rds.force_ssl=1 is
  # set in the parameter group itself.
  parameters = merge(
    {
      shared_preload_libraries   = { value = "pg_stat_statements", apply_method = "pending-reboot" }
      "pg_stat_statements.track" = { value = "all", apply_method = "immediate" }
      log_min_duration_statement = { value = tostring(var.log_min_duration_statement), apply_method = "immediate" }
      log_statement              = { value = "ddl", apply_method = "immediate" }
      log_connections            = { value = "1", apply_method = "immediate" }
      # SSD storage: the planner's default (4.0) models spinning disks; same as roles/postgresql.
      random_page_cost   = { value = "1.1", apply_method = "immediate" }
      log_disconnections = { value = "1", apply_method = "immediate" }
    },
    var.extra_parameters,
  )
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A KMS key policy; "*" means this key. The account root delegates to IAM policies, which are scoped.
  #checkov:skip=CKV_AWS_111:A KMS key policy; "*" means this key. The account root delegates to IAM policies, which are scoped.
  #checkov:skip=CKV_AWS_356:A KMS key policy; "*" means this key (the only resource a key policy can name).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "${var.identifier} RDS storage and Performance Insights"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  count = var.kms_key_arn == null ? 1 : 0

  name          = "alias/${var.identifier}-rds"
  target_key_id = aws_kms_key.this[0].key_id
}

resource "aws_db_subnet_group" "this" {
  name       = var.identifier
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.identifier}-${local.family}-"
  family      = local.family
  description = "dbtier ${var.identifier} PostgreSQL ${local.major}"

  # written out (not in the map) so that scanners see it
  parameter {
    name         = "rds.force_ssl"
    value        = "1"
    apply_method = "immediate"
  }

  dynamic "parameter" {
    for_each = local.parameters
    content {
      name         = parameter.key
      value        = parameter.value.value
      apply_method = parameter.value.apply_method
    }
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  count = var.monitoring_interval > 0 ? 1 : 0

  name               = "${var.identifier}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  count = var.monitoring_interval > 0 ? 1 : 0

  role       = aws_iam_role.monitoring[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier     = var.identifier
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  db_name        = var.db_name
  port           = var.port

  username                            = var.master_username
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = local.kms_key_arn
  iam_database_authentication_enabled = true

  allocated_storage     = var.allocated_storage
  max_allocated_storage = var.max_allocated_storage == 0 ? null : var.max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = local.kms_key_arn

  multi_az               = var.multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = var.security_group_ids
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name

  backup_retention_period   = var.backup_retention_period
  backup_window             = var.backup_window
  maintenance_window        = var.maintenance_window
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.skip_final_snapshot
  final_snapshot_identifier = var.skip_final_snapshot ? null : "${var.identifier}-final"

  auto_minor_version_upgrade      = true
  allow_major_version_upgrade     = var.allow_major_version_upgrade
  apply_immediately               = false
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]

  performance_insights_enabled          = var.performance_insights_enabled
  performance_insights_kms_key_id       = var.performance_insights_enabled ? local.kms_key_arn : null
  performance_insights_retention_period = var.performance_insights_enabled ? var.performance_insights_retention_period : null

  monitoring_interval = var.monitoring_interval
  monitoring_role_arn = var.monitoring_interval > 0 ? aws_iam_role.monitoring[0].arn : null

  tags = var.tags

  depends_on = [aws_iam_role_policy_attachment.monitoring]
}

locals {
  alarms = {
    cpu = {
      metric     = "CPUUtilization"
      comparison = "GreaterThanThreshold"
      threshold  = var.alarm_cpu_percent
      statistic  = "Average"
      text       = "CPU above ${var.alarm_cpu_percent}% for 15 minutes"
    }
    free-storage = {
      metric     = "FreeStorageSpace"
      comparison = "LessThanThreshold"
      threshold  = var.alarm_free_storage_gib * 1024 * 1024 * 1024
      statistic  = "Minimum"
      text       = "free storage below ${var.alarm_free_storage_gib} GiB"
    }
    connections = {
      metric     = "DatabaseConnections"
      comparison = "GreaterThanThreshold"
      threshold  = var.alarm_connections
      statistic  = "Maximum"
      text       = "more than ${var.alarm_connections} connections"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each = local.alarms

  alarm_name          = "${var.identifier}-${each.key}"
  alarm_description   = "RDS ${var.identifier}: ${each.value.text}"
  namespace           = "AWS/RDS"
  metric_name         = each.value.metric
  statistic           = each.value.statistic
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  period              = 300
  evaluation_periods  = 3
  treat_missing_data  = "breaching"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.this.identifier }
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}
