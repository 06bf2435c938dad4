data "aws_partition" "current" {}

locals {
  # arn:aws:rds:REGION:ACCOUNT:db:IDENTIFIER
  rds_parts      = split(":", var.rds_instance_arn)
  rds_prefix     = join(":", slice(local.rds_parts, 0, 5))
  rds_identifier = local.rds_parts[6]
  restore_prefix = "${local.rds_identifier}${var.restore_suffix}"
  restore_arns   = "${local.rds_prefix}:db:${local.restore_prefix}*"
  bucket_arns    = [var.backup_bucket_arn, var.dr_bucket_arn]
  object_arns    = flatten([for b in local.bucket_arns : [for p in var.object_prefixes : "${b}/${p}*"]])
  # arn:aws:sns:REGION:ACCOUNT:NAME: the key may only be used by SNS of the topic's region
  alerts_region = var.alerts_sns_topic_arn == null ? null : split(":", var.alerts_sns_topic_arn)[3]
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ops" {
  name               = "${var.name}-ops"
  description        = "dbtier ops and backup host: its backup prefixes, the backup keys, RDS PITR"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "ops" {
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = local.bucket_arns
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = concat([for p in var.object_prefixes : "${p}*"], [""])
    }
  }

  statement {
    sid       = "BucketFacts"
    actions   = ["s3:GetBucketLocation", "s3:GetBucketVersioning"]
    resources = local.bucket_arns
  }

  statement {
    sid = "ReadWriteOwnObjects"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = local.object_arns
  }

  statement {
    sid = "BackupKeys"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:GenerateDataKey",
      "kms:DescribeKey",
    ]
    resources = var.backup_kms_key_arns
  }

  statement {
    sid     = "DescribeSourceAndRestores"
    actions = ["rds:DescribeDBInstances", "rds:DescribeDBInstanceAutomatedBackups", "rds:ListTagsForResource"]
    resources = [
      var.rds_instance_arn,
      local.restore_arns,
      "${local.rds_prefix}:auto-backup:*",
    ]
  }

  statement {
    sid     = "RestoreToPointInTime"
    actions = ["rds:RestoreDBInstanceToPointInTime"]
    resources = [
      var.rds_instance_arn,
      local.restore_arns,
      "${local.rds_prefix}:subgrp:${var.rds_subnet_group_name}",
      "${local.rds_prefix}:pg:${var.rds_parameter_group_name}",
      "${local.rds_prefix}:og:*",
      "${local.rds_prefix}:auto-backup:*",
    ]
  }

  statement {
    sid       = "ManageOwnRestores"
    actions   = ["rds:AddTagsToResource", "rds:DeleteDBInstance"]
    resources = [local.restore_arns]
  }

  statement {
    sid       = "RestoredStorageKey"
    actions   = ["kms:CreateGrant", "kms:DescribeKey"]
    resources = [var.rds_kms_key_arn]
    condition {
      test     = "StringLike"
      variable = "kms:ViaService"
      values   = ["rds.*.amazonaws.com"]
    }
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }

  # Alertmanager's sns_configs with the instance role: publish to the alert topic and nothing
  # else; its key only through SNS (what SNS calls to encrypt a message for the topic).
  dynamic "statement" {
    for_each = var.alerts_sns_topic_arn == null ? [] : [1]
    content {
      sid       = "PublishAlerts"
      actions   = ["sns:Publish"]
      resources = [var.alerts_sns_topic_arn]
    }
  }

  dynamic "statement" {
    for_each = var.alerts_sns_topic_arn == null ? [] : [1]
    content {
      sid       = "AlertTopicKeyThroughSns"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [var.alerts_kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["sns.${local.alerts_region}.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.secret_arns) > 0 ? [1] : []
    content {
      sid       = "ReadDatabaseSecrets"
      actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
      resources = var.secret_arns
    }
  }
}

resource "aws_iam_policy" "ops" {
  name        = "${var.name}-ops"
  description = "Least privilege of the dbtier ops and backup host"
  policy      = data.aws_iam_policy_document.ops.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "ops" {
  role       = aws_iam_role.ops.name
  policy_arn = aws_iam_policy.ops.arn
}

# Ansible connects through SSM Session Manager (amazon.aws.aws_ssm): the agent needs this
# AWS-maintained policy (ssm, ssmmessages, ec2messages). No SSH port is open anywhere.
resource "aws_iam_role_policy_attachment" "ssm" {
  count = var.ssm_session_manager ? 1 : 0

  role       = aws_iam_role.ops.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "ops" {
  name = "${var.name}-ops"
  role = aws_iam_role.ops.name
  tags = var.tags
}
