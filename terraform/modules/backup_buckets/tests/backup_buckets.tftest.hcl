mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/mrk-mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
}

mock_provider "aws" {
  alias = "dr"
  mock_resource "aws_kms_replica_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/mrk-mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/dr-mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket-dr" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

variables {
  bucket_name           = "dbtier-test-backups"
  dr_bucket_name        = "dbtier-test-backups-dr"
  backup_retention_days = 30
  expiration_days       = 70
}

run "buckets_are_private_versioned_and_encrypted" {
  command = apply

  assert {
    condition     = aws_s3_bucket_versioning.primary.versioning_configuration[0].status == "Enabled" && aws_s3_bucket_versioning.dr.versioning_configuration[0].status == "Enabled"
    error_message = "both buckets versioned"
  }
  assert {
    condition = alltrue([
      for c in [aws_s3_bucket_server_side_encryption_configuration.primary, aws_s3_bucket_server_side_encryption_configuration.dr] :
      one(one(c.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    ])
    error_message = "both buckets SSE-KMS"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.primary.rule).apply_server_side_encryption_by_default).kms_master_key_id == aws_kms_key.backup.arn
    error_message = "the primary bucket uses the backup key"
  }
  assert {
    condition = alltrue([
      for b in [aws_s3_bucket_public_access_block.primary, aws_s3_bucket_public_access_block.dr] :
      b.block_public_acls && b.block_public_policy && b.ignore_public_acls && b.restrict_public_buckets
    ])
    error_message = "no public access on either bucket"
  }
  assert {
    condition = alltrue([
      for k in ["primary", "dr"] :
      data.aws_iam_policy_document.tls_only[k].statement[0].effect == "Deny" &&
      one(data.aws_iam_policy_document.tls_only[k].statement[0].condition).variable == "aws:SecureTransport" &&
      toset(one(data.aws_iam_policy_document.tls_only[k].statement[0].condition).values) == toset(["false"])
    ])
    error_message = "both bucket policies deny non-TLS requests"
  }
  assert {
    condition     = aws_s3_bucket_policy.primary.policy == data.aws_iam_policy_document.tls_only["primary"].json
    error_message = "the TLS-only document is the primary bucket's policy"
  }
  assert {
    condition     = aws_kms_key.backup.enable_key_rotation && aws_kms_key.backup.multi_region
    error_message = "the backup key rotates and is multi-Region"
  }
  assert {
    condition     = length(aws_kms_replica_key.dr) == 1 && length(aws_kms_key.dr) == 0
    error_message = "the DR region holds a replica of the backup key"
  }
}

run "lifecycle_matches_retention" {
  command = apply

  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.primary.rule[0].expiration[0].days == 70
    error_message = "objects expire after expiration_days"
  }
  assert {
    condition     = one(aws_s3_bucket_lifecycle_configuration.primary.rule[0].transition).storage_class == "STANDARD_IA" && one(aws_s3_bucket_lifecycle_configuration.primary.rule[0].transition).days == 30
    error_message = "objects move to STANDARD_IA after 30 days"
  }
  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.primary.rule[0].noncurrent_version_expiration[0].noncurrent_days == 37
    error_message = "noncurrent versions expire after retention + margin (37 days)"
  }
  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.dr.rule[0].expiration[0].days == 70 && aws_s3_bucket_lifecycle_configuration.dr.rule[0].noncurrent_version_expiration[0].noncurrent_days == 37
    error_message = "the DR copy expires with the same lifecycle"
  }
  assert {
    condition     = output.backup_retention_days == 30 && output.expiration_days == 70
    error_message = "the retention the lifecycle was checked against is an output (Ansible's dbtier_retention_days)"
  }
}

run "replication_to_the_dr_region" {
  command = apply

  assert {
    condition     = one(aws_s3_bucket_replication_configuration.this.rule).status == "Enabled"
    error_message = "replication rule enabled"
  }
  assert {
    condition     = one(aws_s3_bucket_replication_configuration.this.rule).destination[0].bucket == aws_s3_bucket.dr.arn
    error_message = "replicas go to the DR bucket"
  }
  assert {
    condition     = one(aws_s3_bucket_replication_configuration.this.rule).destination[0].encryption_configuration[0].replica_kms_key_id == aws_kms_replica_key.dr[0].arn
    error_message = "replicas are encrypted with the DR-region key"
  }
  assert {
    condition     = one(aws_s3_bucket_replication_configuration.this.rule).source_selection_criteria[0].sse_kms_encrypted_objects[0].status == "Enabled"
    error_message = "SSE-KMS objects are replicated"
  }
  assert {
    condition     = aws_s3_bucket_replication_configuration.this.role == aws_iam_role.replication.arn
    error_message = "replication uses its own role"
  }
  assert {
    condition     = output.dr_region == "eu-west-1" && output.region == "us-east-1"
    error_message = "the DR bucket lives in the aws.dr region"
  }
}

run "short_lifetime_skips_the_transition" {
  command = plan
  variables {
    expiration_days = 45
  }
  assert {
    condition     = length(one(aws_s3_bucket_lifecycle_configuration.primary.rule).transition) == 0
    error_message = "no STANDARD_IA transition when objects expire less than 30 days after it (STANDARD_IA bills 30 days)"
  }
}

run "noncurrent_versions_kept_forever_when_null" {
  command = plan
  variables {
    noncurrent_version_expiration_days = null
  }
  assert {
    condition     = length(one(aws_s3_bucket_lifecycle_configuration.primary.rule).noncurrent_version_expiration) == 0
    error_message = "null: no noncurrent version expiration"
  }
}

# Staging had objects expire after 14 days while dbtier keeps backups 30: S3 deleted backups dbtier
# still counted on. tests/terraform/test_static.py also checks the message of this failure.
run "rejects_expiration_shorter_than_retention" {
  command = plan
  variables {
    backup_retention_days = 30
    expiration_days       = 14
  }
  expect_failures = [var.expiration_days]
}

run "rejects_expiration_without_margin" {
  command = plan
  variables {
    backup_retention_days = 30
    retention_margin_days = 1
    expiration_days       = 30
  }
  expect_failures = [var.expiration_days]
}

run "accepts_a_one_day_margin" {
  command = plan
  variables {
    backup_retention_days              = 30
    retention_margin_days              = 1
    expiration_days                    = 31
    noncurrent_version_expiration_days = 31
  }
  assert {
    condition     = one(aws_s3_bucket_lifecycle_configuration.primary.rule).expiration[0].days == 31
    error_message = "retention + 1 day is enough"
  }
}

run "rejects_short_noncurrent_versions" {
  command = plan
  variables {
    noncurrent_version_expiration_days = 7
  }
  expect_failures = [var.noncurrent_version_expiration_days]
}

run "rejects_a_zero_margin" {
  command = plan
  variables {
    retention_margin_days = 0
  }
  expect_failures = [var.retention_margin_days]
}

run "independent_dr_key" {
  command = plan
  variables {
    multi_region_key = false
  }
  assert {
    condition     = length(aws_kms_replica_key.dr) == 0 && length(aws_kms_key.dr) == 1
    error_message = "multi_region_key = false creates an independent DR key"
  }
}

run "rejects_early_transition" {
  command = plan
  variables {
    transition_to_ia_days = 10
  }
  expect_failures = [var.transition_to_ia_days]
}

run "rejects_bad_bucket_name" {
  command = plan
  variables {
    bucket_name = "Bad_Bucket"
  }
  expect_failures = [var.bucket_name]
}
