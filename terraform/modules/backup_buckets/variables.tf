variable "bucket_name" {
  description = "Name of the primary backup bucket (in the provider's region)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !strcontains(var.bucket_name, "..")
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens."
  }
}

variable "dr_bucket_name" {
  description = "Name of the disaster-recovery bucket (in the aws.dr provider's region)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.dr_bucket_name)) && !strcontains(var.dr_bucket_name, "..")
    error_message = "dr_bucket_name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens."
  }
}

variable "backup_retention_days" {
  description = "dbtier's retention policy in days (Ansible's dbtier_retention_days, `dbtier backup cleanup --days`): the lifecycle below must keep objects longer."
  type        = number
  default     = 30

  validation {
    condition     = var.backup_retention_days >= 1 && floor(var.backup_retention_days) == var.backup_retention_days
    error_message = "backup_retention_days must be a whole number of days, at least 1."
  }
}

variable "retention_margin_days" {
  description = "Days the lifecycle keeps objects beyond backup_retention_days. dbtier keeps the newest base backup from before its cutoff (and the WAL from it on), so cover the interval between base backups; at least 1."
  type        = number
  default     = 7

  validation {
    condition     = var.retention_margin_days >= 1
    error_message = "retention_margin_days must be at least 1: S3 must never delete a backup dbtier still keeps."
  }
}

variable "expiration_days" {
  description = "Days after which S3 expires a backup object (both buckets): a backstop behind dbtier's own cleanup, at least backup_retention_days + retention_margin_days."
  type        = number
  default     = 37

  validation {
    condition     = var.expiration_days >= var.backup_retention_days + var.retention_margin_days
    error_message = "expiration_days (${var.expiration_days}) must be at least backup_retention_days (${var.backup_retention_days}) + retention_margin_days (${var.retention_margin_days}) = ${var.backup_retention_days + var.retention_margin_days}: S3 would delete backups dbtier still keeps."
  }
}

variable "transition_to_ia_days" {
  description = "Days after which objects move to STANDARD_IA (S3 requires at least 30); 0 disables the transition. Skipped when objects expire less than 30 days later (STANDARD_IA bills 30 days at least)."
  type        = number
  default     = 30

  validation {
    condition     = var.transition_to_ia_days == 0 || var.transition_to_ia_days >= 30
    error_message = "transition_to_ia_days must be 0 (off) or at least 30 (an S3 rule)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a noncurrent (deleted or overwritten) object version is kept; null keeps them forever. At least backup_retention_days + retention_margin_days, so that a backup deleted inside the retention window (by mistake or by a compromised host) can still be brought back."
  type        = number
  default     = 37

  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= var.backup_retention_days + var.retention_margin_days, false)
    error_message = "noncurrent_version_expiration_days (${coalesce(var.noncurrent_version_expiration_days, 0)}) must be null or at least backup_retention_days (${var.backup_retention_days}) + retention_margin_days (${var.retention_margin_days}) = ${var.backup_retention_days + var.retention_margin_days}: a backup deleted inside the retention window must stay recoverable."
  }
}

variable "dr_storage_class" {
  description = "Storage class of the replicas in the DR bucket."
  type        = string
  default     = "STANDARD_IA"

  validation {
    condition     = contains(["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"], var.dr_storage_class)
    error_message = "dr_storage_class must be STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR."
  }
}

variable "multi_region_key" {
  description = <<-EOT
    Make the backup key a multi-Region key with a replica in the DR region (recommended): backups
    encrypted by dbtier in the primary region stay decryptable in the DR region when the primary
    region is down. false creates an independent key in the DR region instead.
  EOT
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Allow destroying non-empty buckets. Only for throwaway environments."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
