data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "primary" {}
data "aws_region" "dr" {
  provider = aws.dr
}

locals {
  partition    = data.aws_partition.current.partition
  account_root = "arn:${local.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  # dbtier encrypts each backup with a data key wrapped by this key. It is multi-Region so that
  # the copies in the DR bucket can be decrypted in the DR region when the primary is down.
  buckets = {
    primary = { name = var.bucket_name, arn = aws_s3_bucket.primary.arn }
    dr      = { name = var.dr_bucket_name, arn = aws_s3_bucket.dr.arn }
  }
}

# ---------------------------------------------------------------- KMS (multi-Region key) ----

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
      identifiers = [local.account_root]
    }
  }
}

resource "aws_kms_key" "backup" {
  description             = "dbtier backups (${var.bucket_name}): SSE-KMS and backup envelope encryption"
  multi_region            = var.multi_region_key
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "backup" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.backup.key_id
}

resource "aws_kms_replica_key" "dr" {
  count    = var.multi_region_key ? 1 : 0
  provider = aws.dr

  description             = "dbtier backups (${var.dr_bucket_name}): replica of the primary backup key"
  primary_key_arn         = aws_kms_key.backup.arn
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_key" "dr" {
  count    = var.multi_region_key ? 0 : 1
  provider = aws.dr

  description             = "dbtier backups (${var.dr_bucket_name}): DR region key"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

locals {
  dr_key_arn = var.multi_region_key ? aws_kms_replica_key.dr[0].arn : aws_kms_key.dr[0].arn
  dr_key_id  = var.multi_region_key ? aws_kms_replica_key.dr[0].key_id : aws_kms_key.dr[0].key_id
}

resource "aws_kms_alias" "dr" {
  provider = aws.dr

  name          = "alias/${var.dr_bucket_name}"
  target_key_id = local.dr_key_id
}

# ---------------------------------------------------------------- primary bucket ----------

resource "aws_s3_bucket" "primary" {
  #checkov:skip=CKV_AWS_18:Access logs of a backup bucket would need a log bucket per region; object-level audit is CloudTrail data events (account level, see docs/DEPLOYMENT.md).
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events; dbtier verifies backups through their manifests.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Name = var.bucket_name, Role = "backup-primary" })
}

resource "aws_s3_bucket_ownership_controls" "primary" {
  bucket = aws_s3_bucket.primary.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "primary" {
  bucket                  = aws_s3_bucket.primary.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "primary" {
  bucket = aws_s3_bucket.primary.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "primary" {
  bucket = aws_s3_bucket.primary.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.backup.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "primary" {
  bucket = aws_s3_bucket.primary.id

  rule {
    id     = "backup-retention"
    status = "Enabled"
    filter {}

    dynamic "transition" {
      for_each = var.transition_to_ia_days > 0 && var.expiration_days - var.transition_to_ia_days >= 30 ? [1] : []
      content {
        days          = var.transition_to_ia_days
        storage_class = "STANDARD_IA"
      }
    }

    expiration {
      days = var.expiration_days
    }

    dynamic "noncurrent_version_expiration" {
      for_each = var.noncurrent_version_expiration_days == null ? [] : [var.noncurrent_version_expiration_days]
      content {
        noncurrent_days = noncurrent_version_expiration.value
      }
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  depends_on = [aws_s3_bucket_versioning.primary]
}

# ---------------------------------------------------------------- DR bucket ---------------

resource "aws_s3_bucket" "dr" {
  #checkov:skip=CKV_AWS_18:Access logs of a backup bucket would need a log bucket per region; object-level audit is CloudTrail data events (account level, see docs/DEPLOYMENT.md).
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events; dbtier verifies backups through their manifests.
  provider = aws.dr

  bucket        = var.dr_bucket_name
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Name = var.dr_bucket_name, Role = "backup-dr" })
}

resource "aws_s3_bucket_ownership_controls" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "dr" {
  provider = aws.dr

  bucket                  = aws_s3_bucket.dr.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.dr_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id

  rule {
    id     = "backup-retention"
    status = "Enabled"
    filter {}

    expiration {
      days = var.expiration_days
    }

    dynamic "noncurrent_version_expiration" {
      for_each = var.noncurrent_version_expiration_days == null ? [] : [var.noncurrent_version_expiration_days]
      content {
        noncurrent_days = noncurrent_version_expiration.value
      }
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  depends_on = [aws_s3_bucket_versioning.dr]
}

# ---------------------------------------------------------------- TLS-only policies -------

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
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

  statement {
    sid       = "DenyOldTLS"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "primary" {
  bucket = aws_s3_bucket.primary.id
  policy = data.aws_iam_policy_document.tls_only["primary"].json

  depends_on = [aws_s3_bucket_public_access_block.primary]
}

resource "aws_s3_bucket_policy" "dr" {
  provider = aws.dr

  bucket = aws_s3_bucket.dr.id
  policy = data.aws_iam_policy_document.tls_only["dr"].json

  depends_on = [aws_s3_bucket_public_access_block.dr]
}

# ---------------------------------------------------------------- replication -------------

data "aws_iam_policy_document" "replication_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "replication" {
  name               = "${var.bucket_name}-replication"
  assume_role_policy = data.aws_iam_policy_document.replication_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "replication" {
  statement {
    sid       = "ReadSourceConfiguration"
    actions   = ["s3:GetReplicationConfiguration", "s3:ListBucket"]
    resources = [aws_s3_bucket.primary.arn]
  }

  statement {
    sid = "ReadSourceObjects"
    actions = [
      "s3:GetObjectVersionForReplication",
      "s3:GetObjectVersionAcl",
      "s3:GetObjectVersionTagging",
    ]
    resources = ["${aws_s3_bucket.primary.arn}/*"]
  }

  statement {
    sid       = "WriteReplicas"
    actions   = ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"]
    resources = ["${aws_s3_bucket.dr.arn}/*"]
  }

  statement {
    sid       = "DecryptSource"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.backup.arn]
    condition {
      test     = "StringLike"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.primary.name}.amazonaws.com"]
    }
  }

  statement {
    sid       = "EncryptReplicas"
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [local.dr_key_arn]
    condition {
      test     = "StringLike"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.dr.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "replication" {
  name   = "replicate-to-${var.dr_bucket_name}"
  role   = aws_iam_role.replication.id
  policy = data.aws_iam_policy_document.replication.json
}

resource "aws_s3_bucket_replication_configuration" "this" {
  bucket = aws_s3_bucket.primary.id
  role   = aws_iam_role.replication.arn

  rule {
    id     = "backups-to-dr"
    status = "Enabled"
    filter {}

    delete_marker_replication {
      status = "Enabled"
    }

    source_selection_criteria {
      sse_kms_encrypted_objects {
        status = "Enabled"
      }
    }

    destination {
      bucket        = aws_s3_bucket.dr.arn
      storage_class = var.dr_storage_class
      encryption_configuration {
        replica_kms_key_id = local.dr_key_arn
      }
    }
  }

  # replication requires versioning on both sides
  depends_on = [aws_s3_bucket_versioning.primary, aws_s3_bucket_versioning.dr]
}
