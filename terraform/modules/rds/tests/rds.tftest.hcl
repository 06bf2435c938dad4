mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
}

variables {
  identifier         = "dbtier-test"
  subnet_ids         = ["subnet-0a1b2c3d", "subnet-0e1f2a3b"]
  security_group_ids = ["sg-0123abcd"]
}

run "production_settings" {
  command = apply

  assert {
    condition     = aws_db_instance.this.multi_az && aws_db_instance.this.engine == "postgres" && aws_db_instance.this.engine_version == "15"
    error_message = "PostgreSQL 15, Multi-AZ"
  }
  assert {
    condition     = aws_db_instance.this.storage_encrypted && aws_db_instance.this.kms_key_id == aws_kms_key.this[0].arn
    error_message = "storage must be encrypted with the module's KMS key"
  }
  assert {
    condition     = aws_kms_key.this[0].enable_key_rotation
    error_message = "the storage key rotates"
  }
  assert {
    condition     = aws_db_instance.this.backup_retention_period == 14
    error_message = "PITR window (backup retention) defaults to 14 days"
  }
  assert {
    condition     = aws_db_instance.this.deletion_protection && !aws_db_instance.this.skip_final_snapshot && aws_db_instance.this.final_snapshot_identifier == "dbtier-test-final"
    error_message = "deletion protection on, final snapshot taken"
  }
  assert {
    condition     = !aws_db_instance.this.publicly_accessible
    error_message = "never publicly accessible"
  }
  assert {
    condition     = aws_db_instance.this.performance_insights_enabled && aws_db_instance.this.performance_insights_kms_key_id == aws_kms_key.this[0].arn
    error_message = "Performance Insights on, encrypted"
  }
  assert {
    condition     = aws_db_instance.this.monitoring_interval == 60 && aws_db_instance.this.monitoring_role_arn == aws_iam_role.monitoring[0].arn
    error_message = "enhanced monitoring every 60s with its role"
  }
  assert {
    condition     = aws_db_instance.this.manage_master_user_password
    error_message = "the master password lives in Secrets Manager, never in state or tfvars"
  }
  assert {
    condition     = aws_db_parameter_group.this.family == "postgres15"
    error_message = "parameter group family follows the engine major"
  }
  assert {
    condition     = !aws_db_instance.this.allow_major_version_upgrade && aws_db_instance.this.auto_minor_version_upgrade
    error_message = "no major version upgrade unless allow_major_version_upgrade; minor upgrades automatic"
  }
  assert {
    condition     = output.engine_major == 15
    error_message = "the engine major is an output (the client tools follow it)"
  }
  assert {
    condition = alltrue([
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "rds.force_ssl=1"),
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "log_min_duration_statement=200"),
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "shared_preload_libraries=pg_stat_statements"),
    ])
    error_message = "parameter group: rds.force_ssl=1, log_min_duration_statement=200, pg_stat_statements preloaded"
  }
  assert {
    condition     = toset(keys(aws_cloudwatch_metric_alarm.this)) == toset(["cpu", "free-storage", "connections"])
    error_message = "alarms for CPU, storage and connections"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.this["free-storage"].threshold == 10 * 1024 * 1024 * 1024 && aws_cloudwatch_metric_alarm.this["free-storage"].comparison_operator == "LessThanThreshold"
    error_message = "free storage alarm fires below 10 GiB"
  }
}

run "major_version_is_a_variable" {
  command = plan
  variables {
    engine_version      = "16.4"
    monitoring_interval = 0
  }
  assert {
    condition     = aws_db_parameter_group.this.family == "postgres16" && length(aws_iam_role.monitoring) == 0
    error_message = "16.4 -> postgres16 family; monitoring 0 -> no monitoring role"
  }
  assert {
    condition     = output.engine_major == 16
    error_message = "16.4 -> engine_major 16"
  }
}

run "major_upgrade_is_allowed_only_on_request" {
  command = plan
  variables {
    engine_version              = "16"
    allow_major_version_upgrade = true
  }
  assert {
    condition     = aws_db_instance.this.allow_major_version_upgrade
    error_message = "allow_major_version_upgrade reaches the instance"
  }
}

run "given_key_is_used" {
  command = plan
  variables {
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/abcd"
  }
  assert {
    condition     = length(aws_kms_key.this) == 0 && aws_db_instance.this.kms_key_id == "arn:aws:kms:us-east-1:123456789012:key/abcd"
    error_message = "a given key replaces the module's own"
  }
}

run "rejects_no_pitr" {
  command = plan
  variables {
    backup_retention_period = 0
  }
  expect_failures = [var.backup_retention_period]
}

run "rejects_old_postgres" {
  command = plan
  variables {
    engine_version = "9.6"
  }
  expect_failures = [var.engine_version]
}

run "rejects_bad_monitoring_interval" {
  command = plan
  variables {
    monitoring_interval = 7
  }
  expect_failures = [var.monitoring_interval]
}

run "rejects_single_subnet" {
  command = plan
  variables {
    subnet_ids = ["subnet-0a1b2c3d"]
  }
  expect_failures = [var.subnet_ids]
}

run "rejects_reserved_master_user" {
  command = plan
  variables {
    master_username = "postgres"
  }
  expect_failures = [var.master_username]
}
