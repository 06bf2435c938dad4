output "bucket" {
  description = "The transfer bucket: Ansible's ansible_aws_ssm_bucket_name."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the transfer bucket."
  value       = aws_s3_bucket.this.arn
}

output "region" {
  description = "Region of the bucket and the instances: Ansible's ansible_aws_ssm_region."
  value       = local.region
}

output "kms_key_arn" {
  description = "KMS key encrypting the transfer bucket."
  value       = aws_kms_key.this.arn
}

output "controller_policy_arn" {
  description = "IAM policy to attach to the role or user that runs Ansible (SSM sessions to the tier's hosts, the transfer bucket and its key)."
  value       = aws_iam_policy.controller.arn
}
