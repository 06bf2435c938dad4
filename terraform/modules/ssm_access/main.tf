# What Ansible needs to manage the hosts without SSH: the file-transfer bucket of the
# amazon.aws.aws_ssm connection plugin and the IAM policy of the controller that runs Ansible.
#
# The plugin uploads each module to s3://<bucket>/<instance id>/..., then tells the host (over the
# SSM session) to fetch it with curl from a presigned URL, and the other way round for results.
# The URLs are signed by the controller, so the hosts' roles need no S3 or KMS permission on this
# bucket: they only need to reach S3 (the VPC's gateway endpoint) and the SSM agent's policy.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition = data.aws_partition.current.partition
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A KMS key policy; "*" means this key. The account root delegates to IAM policies, which are scoped.
  #checkov:skip=CKV_AWS_111:A KMS key policy; "*" means this key. The account root delegates to IAM policies, which are scoped.
  #checkov:skip=CKV_AWS_356:A KMS key policy; "*" means this key (the only resource a key policy can name).
  statement {
    sid       = "AccountAdministersAndDelegatesToIAM"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name} Ansible SSM file transfers (${var.bucket_name})"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Transient transfer files of the Ansible SSM connection; access is audited by CloudTrail (SSM sessions and S3 data events at account level).
  #checkov:skip=CKV_AWS_21:Unversioned on purpose: transferred files may hold secrets, and versions would keep them after the plugin deletes them (the plugin's own advice).
  #checkov:skip=CKV_AWS_144:Transient transfer files (expire within days): nothing to replicate to another region.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events of transient transfer files.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Name = var.bucket_name, Role = "ansible-ssm-transfer" })
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "transient-transfers"
    status = "Enabled"
    filter {}

    expiration {
      days = var.object_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

# --- the controller: attach this policy to the role or user that runs ansible-playbook ---------

data "aws_iam_policy_document" "controller" {
  statement {
    sid     = "StartSessionsOnTheTierHosts"
    actions = ["ssm:StartSession"]
    resources = concat(
      [for id in var.instance_ids : "arn:${local.partition}:ec2:${local.region}:${local.account}:instance/${id}"],
      # the default shell (Ansible), and port forwarding to the hosts' own ports (Prometheus
      # 9090 and Alertmanager 9093 on the ops host have no security group opening)
      [
        "arn:${local.partition}:ssm:${local.region}::document/SSM-SessionManagerRunShell",
        "arn:${local.partition}:ssm:${local.region}::document/AWS-StartPortForwardingSession",
      ],
    )
  }

  statement {
    sid       = "EndOwnSessions"
    actions   = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = ["arn:${local.partition}:ssm:${local.region}:${local.account}:session/$${aws:userid}-*"]
  }

  statement {
    sid       = "TransferBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.this.arn]
  }

  statement {
    sid       = "TransferObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.this.arn}/*"]
  }

  statement {
    sid       = "TransferKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_policy" "controller" {
  name        = "${var.name}-ansible-ssm"
  description = "Run Ansible on the ${var.name} hosts over SSM Session Manager (amazon.aws.aws_ssm)"
  policy      = data.aws_iam_policy_document.controller.json
  tags        = var.tags
}
