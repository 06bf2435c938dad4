mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::123456789012:policy/mock" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
}

variables {
  name                     = "dbtier-test"
  backup_bucket_arn        = "arn:aws:s3:::dbtier-test-backups"
  dr_bucket_arn            = "arn:aws:s3:::dbtier-test-backups-dr"
  backup_kms_key_arns      = ["arn:aws:kms:us-east-1:123456789012:key/mrk-1", "arn:aws:kms:eu-west-1:123456789012:key/mrk-1"]
  rds_instance_arn         = "arn:aws:rds:us-east-1:123456789012:db:dbtier-test"
  rds_kms_key_arn          = "arn:aws:kms:us-east-1:123456789012:key/rds"
  rds_subnet_group_name    = "dbtier-test"
  rds_parameter_group_name = "dbtier-test-postgres15-x"
}

run "least_privilege" {
  command = plan

  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.ops.statement : alltrue([for a in s.actions : !strcontains(a, "*")])])
    error_message = "no wildcard actions"
  }
  assert {
    condition = toset([for s in data.aws_iam_policy_document.ops.statement : s.sid if s.sid == "ReadWriteOwnObjects"][*]) == toset(["ReadWriteOwnObjects"]) && toset(one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "ReadWriteOwnObjects"])) == toset([
      "arn:aws:s3:::dbtier-test-backups/dbtier/*",
      "arn:aws:s3:::dbtier-test-backups-dr/dbtier/*",
    ])
    error_message = "objects only under the dbtier/ prefix of the two buckets"
  }
  assert {
    condition     = toset(one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "BackupKeys"])) == toset(var.backup_kms_key_arns)
    error_message = "KMS use limited to the backup keys"
  }
  assert {
    condition = toset(one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "ManageOwnRestores"])) == toset([
      "arn:aws:rds:us-east-1:123456789012:db:dbtier-test-pitr-*",
    ])
    error_message = "the host may only tag or delete its own PITR restores, never the source"
  }
  assert {
    condition     = contains(one([for s in data.aws_iam_policy_document.ops.statement : s.actions if s.sid == "RestoreToPointInTime"]), "rds:RestoreDBInstanceToPointInTime")
    error_message = "point-in-time restore is allowed"
  }
  assert {
    condition     = length([for s in data.aws_iam_policy_document.ops.statement : s if s.sid == "ReadDatabaseSecrets"]) == 0
    error_message = "no secrets unless given"
  }
}

run "point_in_time_restores_only_into_the_documented_names" {
  command = plan

  # docs/BACKUP-RESTORE.md: dbtier restore rds --rds-instance dbtier-production --new-instance dbtier-production-pitr-1
  variables {
    rds_instance_arn = "arn:aws:rds:us-east-1:123456789012:db:dbtier-production"
  }

  assert {
    condition     = output.restore_instance_prefix == "dbtier-production-pitr-"
    error_message = "restores are named <source>-pitr-..."
  }
  assert {
    condition = toset(one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "RestoreToPointInTime"])) == toset([
      "arn:aws:rds:us-east-1:123456789012:db:dbtier-production",
      "arn:aws:rds:us-east-1:123456789012:db:dbtier-production-pitr-*",
      "arn:aws:rds:us-east-1:123456789012:subgrp:dbtier-test",
      "arn:aws:rds:us-east-1:123456789012:pg:dbtier-test-postgres15-x",
      "arn:aws:rds:us-east-1:123456789012:og:*",
      "arn:aws:rds:us-east-1:123456789012:auto-backup:*",
    ])
    error_message = "RestoreDBInstanceToPointInTime: from the source into <source>-pitr-* with the tier's groups, nothing else"
  }
}

run "ssm_session_manager" {
  command = plan

  assert {
    condition     = aws_iam_role_policy_attachment.ssm[0].policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "the ops role carries the SSM Session Manager policy (Ansible over amazon.aws.aws_ssm)"
  }
}

run "secrets_when_given" {
  command = plan
  variables {
    secret_arns = ["arn:aws:secretsmanager:us-east-1:123456789012:secret:rds-x"]
  }
  assert {
    condition     = one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "ReadDatabaseSecrets"]) == toset(["arn:aws:secretsmanager:us-east-1:123456789012:secret:rds-x"])
    error_message = "given secrets are readable"
  }
}

run "rejects_wildcard_prefix" {
  command = plan
  variables {
    object_prefixes = ["*"]
  }
  expect_failures = [var.object_prefixes]
}

run "rejects_root_prefix" {
  command = plan
  variables {
    object_prefixes = ["/"]
  }
  expect_failures = [var.object_prefixes]
}

run "rejects_non_rds_arn" {
  command = plan
  variables {
    rds_instance_arn = "arn:aws:s3:::not-a-db"
  }
  expect_failures = [var.rds_instance_arn]
}

run "publishes_alerts_to_its_topic_only" {
  command = plan
  variables {
    alerts_sns_topic_arn = "arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts"
    alerts_kms_key_arn   = "arn:aws:kms:us-east-1:123456789012:key/alerts"
  }
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.ops.statement : s.actions if s.sid == "PublishAlerts"]) == toset(["sns:Publish"]) &&
      one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "PublishAlerts"]) == toset(["arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts"])
    )
    error_message = "sns:Publish on the alert topic only"
  }
  assert {
    condition     = length([for s in data.aws_iam_policy_document.ops.statement : s if anytrue([for a in s.actions : startswith(a, "sns:")])]) == 1
    error_message = "no other statement grants an SNS action"
  }
  assert {
    condition = (
      one([for s in data.aws_iam_policy_document.ops.statement : s.actions if s.sid == "AlertTopicKeyThroughSns"]) == toset(["kms:GenerateDataKey", "kms:Decrypt"]) &&
      one([for s in data.aws_iam_policy_document.ops.statement : s.resources if s.sid == "AlertTopicKeyThroughSns"]) == toset(["arn:aws:kms:us-east-1:123456789012:key/alerts"]) &&
      one(one([for s in data.aws_iam_policy_document.ops.statement : s.condition if s.sid == "AlertTopicKeyThroughSns"])).variable == "kms:ViaService" &&
      one(one([for s in data.aws_iam_policy_document.ops.statement : s.condition if s.sid == "AlertTopicKeyThroughSns"])).values == tolist(["sns.us-east-1.amazonaws.com"])
    )
    error_message = "the topic's key only through SNS of the topic's region"
  }
}

run "no_sns_without_a_topic" {
  command = plan
  assert {
    condition     = length([for s in data.aws_iam_policy_document.ops.statement : s if contains(["PublishAlerts", "AlertTopicKeyThroughSns"], s.sid)]) == 0
    error_message = "no alert topic given, no SNS permission"
  }
}

run "rejects_topic_without_its_key" {
  command = plan
  variables {
    alerts_sns_topic_arn = "arn:aws:sns:us-east-1:123456789012:dbtier-test-alerts"
  }
  expect_failures = [var.alerts_kms_key_arn]
}

run "rejects_non_sns_topic" {
  command = plan
  variables {
    alerts_sns_topic_arn = "arn:aws:sqs:us-east-1:123456789012:q"
    alerts_kms_key_arn   = "arn:aws:kms:us-east-1:123456789012:key/alerts"
  }
  expect_failures = [var.alerts_sns_topic_arn]
}
