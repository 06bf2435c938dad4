# The tier's alert topic: CloudWatch alarms (RDS, EC2 status checks, the PgBouncer NLB) and the
# ops host's Alertmanager publish here; people and paging services subscribe to it.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name
}

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
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }

  # CloudWatch cannot publish to an encrypted topic without these (and drops the notification
  # silently); only on behalf of this account's alarms.
  statement {
    sid       = "CloudWatchAlarmsUseTheKey"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name} alert topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-alerts"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_sns_topic" "this" {
  name              = "${var.name}-alerts"
  display_name      = "${var.name} alerts"
  kms_master_key_id = aws_kms_key.this.arn
  tags              = var.tags
}

# Principals of this account publish through their IAM policies (the ops role may, see the iam
# module); the topic policy only has to let CloudWatch alarms of this account in.
data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:cloudwatch:${local.region}:${local.account}:alarm:*"]
    }
  }
}

resource "aws_sns_topic_policy" "this" {
  arn    = aws_sns_topic.this.arn
  policy = data.aws_iam_policy_document.topic.json
}

# Each address gets a confirmation mail from AWS: nothing is delivered until someone clicks it.
resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.email_addresses)

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = each.value
}
