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

variable "retention_days" {
  description = "Days a backup object is kept before it expires (match dbtier's retention policy)."
  type        = number
  default     = 35

  validation {
    condition     = var.retention_days >= 1
    error_message = "retention_days must be at least 1."
  }
}

variable "transition_to_ia_days" {
  description = "Days after which objects move to STANDARD_IA (S3 requires at least 30); 0 disables the transition."
  type        = number
  default     = 30

  validation {
    condition     = var.transition_to_ia_days == 0 || var.transition_to_ia_days >= 30
    error_message = "transition_to_ia_days must be 0 (off) or at least 30 (an S3 rule)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a noncurrent (overwritten or deleted) object version is kept."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
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
