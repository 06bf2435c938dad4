output "bucket" {
  description = "Primary backup bucket name."
  value       = aws_s3_bucket.primary.bucket
}

output "bucket_arn" {
  description = "Primary backup bucket ARN."
  value       = aws_s3_bucket.primary.arn
}

output "region" {
  description = "Region of the primary bucket."
  value       = data.aws_region.primary.name
}

output "dr_bucket" {
  description = "DR bucket name."
  value       = aws_s3_bucket.dr.bucket
}

output "dr_bucket_arn" {
  description = "DR bucket ARN."
  value       = aws_s3_bucket.dr.arn
}

output "dr_region" {
  description = "Region of the DR bucket."
  value       = data.aws_region.dr.name
}

output "kms_key_arn" {
  description = "ARN of the multi-Region backup key (primary region): SSE-KMS and dbtier envelope encryption."
  value       = aws_kms_key.backup.arn
}

output "kms_key_id" {
  description = "Id of the multi-Region backup key (mrk-...), the same in both regions."
  value       = aws_kms_key.backup.key_id
}

output "dr_kms_key_arn" {
  description = "ARN of the backup key in the DR region (the multi-Region replica, or an independent key)."
  value       = local.dr_key_arn
}

output "replication_role_arn" {
  description = "IAM role S3 assumes to replicate into the DR bucket."
  value       = aws_iam_role.replication.arn
}

output "backup_retention_days" {
  description = "dbtier's retention in days the lifecycle was checked against (Ansible's dbtier_retention_days)."
  value       = var.backup_retention_days
}

output "expiration_days" {
  description = "Days after which S3 expires a backup object."
  value       = var.expiration_days
}
