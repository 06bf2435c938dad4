mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/ssm" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::dbtier-test-ssm" }
  }
  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::123456789012:policy/dbtier-test-ansible-ssm" }
  }
}

variables {
  name         = "dbtier-test"
  bucket_name  = "dbtier-test-ssm"
  instance_ids = ["i-0a1b2c3d", "i-0e1f2a3b"]
}

run "private_encrypted_transient_bucket" {
  command = apply

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms" && one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).kms_master_key_id == aws_kms_key.this.arn
    error_message = "SSE-KMS with the module's key"
  }
  assert {
    condition = (
      aws_s3_bucket_public_access_block.this.block_public_acls && aws_s3_bucket_public_access_block.this.block_public_policy &&
      aws_s3_bucket_public_access_block.this.ignore_public_acls && aws_s3_bucket_public_access_block.this.restrict_public_buckets
    )
    error_message = "no public access"
  }
  assert {
    condition     = one(aws_s3_bucket_lifecycle_configuration.this.rule).expiration[0].days == 1 && one(aws_s3_bucket_lifecycle_configuration.this.rule).abort_incomplete_multipart_upload[0].days_after_initiation == 1
    error_message = "leftover transfer objects expire after a day"
  }
  assert {
    condition     = data.aws_iam_policy_document.bucket.statement[0].effect == "Deny" && one(data.aws_iam_policy_document.bucket.statement[0].condition).variable == "aws:SecureTransport"
    error_message = "TLS only"
  }
  assert {
    condition     = aws_kms_key.this.enable_key_rotation
    error_message = "the key rotates"
  }
  assert {
    condition     = output.bucket == "dbtier-test-ssm" && output.region == "us-east-1"
    error_message = "bucket and region are outputs (ansible_aws_ssm_bucket_name, ansible_aws_ssm_region)"
  }
}

run "controller_may_reach_only_the_tier" {
  command = plan

  assert {
    condition = toset(one([for s in data.aws_iam_policy_document.controller.statement : s.resources if s.sid == "StartSessionsOnTheTierHosts"])) == toset([
      "arn:aws:ec2:us-east-1:123456789012:instance/i-0a1b2c3d",
      "arn:aws:ec2:us-east-1:123456789012:instance/i-0e1f2a3b",
      "arn:aws:ssm:us-east-1::document/SSM-SessionManagerRunShell",
      "arn:aws:ssm:us-east-1::document/AWS-StartPortForwardingSession",
    ])
    error_message = "sessions only to the tier's instances, with the default shell or port forwarding to the host itself"
  }
  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.controller.statement : alltrue([for r in s.resources : r != "*"]) && alltrue([for a in s.actions : !strcontains(a, "*")])])
    error_message = "no wildcard actions or resources"
  }
}

run "rejects_long_lived_transfers" {
  command = plan
  variables {
    object_expiration_days = 30
  }
  expect_failures = [var.object_expiration_days]
}
